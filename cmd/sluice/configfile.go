package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
)

// TOML types a key takes, by the flag it sets.
const (
	kindBool     = "bool"     // true or false
	kindInt      = "int"      // an integer (a string of digits too)
	kindSize     = "size"     // an integer of bytes or a string such as "4M"
	kindDuration = "duration" // a string such as "10s" (or the integer 0)
	kindString   = "string"
	kindList     = "list" // a string or an array of strings (repeatable flag)
)

// fileOnly are keys that only a flag can set.
var fileOnly = map[string]bool{"config": true, "print-config": true}

// configArg returns the value of --config in args, or "". It stops at "--",
// as flag parsing does.
func configArg(args []string) string {
	path := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "config" {
			continue
		}
		if !hasVal && i+1 < len(args) {
			i++
			val = args[i]
		}
		path = val
	}
	return path
}

// fileRules holds the keys of a configuration file that are tables.
type fileRules struct {
	ClientRule []ruleSpec `toml:"client-rule"`
	Rule       []ruleSpec `toml:"rule"`
}

// loadConfigFile reads cfg.configFile and sets, for each top-level key, the
// flag of that name, so that a key and its flag share one parser and one
// check. Errors are one line: "--config FILE:LINE: what".
func loadConfigFile(fs *flag.FlagSet, cfg *config) error {
	path := quoteOdd(cfg.configFile) // as errors name it
	data, err := os.ReadFile(cfg.configFile)
	if err != nil {
		return fmt.Errorf("--config %s: %w", path, unwrapPathError(err))
	}
	// A byte order mark (a file saved by Notepad) is no part of the first
	// key, whose line keyLine would not find.
	text := strings.TrimPrefix(string(data), "\ufeff")
	var generic map[string]any
	md, err := toml.Decode(text, &generic)
	if err != nil {
		return fileError(path, text, err)
	}
	// The rule tables are checked before they are decoded, so that every
	// error names its rule and the line it starts on (the library gives
	// the line of a key's last use, not of the table that holds it).
	ruleLines := make(map[string][]int)
	for _, k := range md.Keys() {
		name := k[0]
		if _, seen := ruleLines[name]; seen || name != "rule" && name != "client-rule" {
			continue
		}
		lines, header := tableLines(text, name)
		ruleLines[name] = lines
		if line, err := checkRuleTables(text, name, generic[name], lines, header, keyLine(text, k)); err != nil {
			return fmt.Errorf("--config %s:%d: %w", path, line, err)
		}
	}
	var tables fileRules
	if _, err = toml.Decode(text, &tables); err != nil {
		return fileError(path, text, err)
	}
	cfg.fileLines = make(map[string]int)
	for _, k := range md.Keys() {
		// A dotted key or a [table] is a table under its first part
		// (k[0]): an unknown key, or a wrong type for a flag's key.
		name := k[0]
		if _, seen := cfg.fileLines[name]; seen || name == "rule" || name == "client-rule" {
			continue // the tables are decoded above; their keys are checked there
		}
		cfg.fileLines[name] = keyLine(text, k)
		if err := setKey(fs, name, generic[name]); err != nil {
			return fmt.Errorf("--config %s:%d: %w", path, cfg.fileLines[name], err)
		}
	}
	for _, set := range []struct {
		name  string
		specs []ruleSpec
	}{{"client-rule", tables.ClientRule}, {"rule", tables.Rule}} {
		for i, s := range set.specs {
			if _, err := compileRule(s, set.name == "client-rule"); err != nil {
				return fmt.Errorf("--config %s:%d: [[%s]] #%d: %w", path, nth(ruleLines[set.name], i, 0), set.name, i+1, err)
			}
		}
	}
	cfg.clientRules, cfg.rules = tables.ClientRule, tables.Rule
	return nil
}

// fileError formats a TOML error with its line when the library gives one.
func fileError(path, text string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg := pe.Message
		if pe.LastKey != "" && !strings.Contains(msg, pe.LastKey) {
			msg = pe.LastKey + ": " + msg
		}
		return fmt.Errorf("--config %s:%d: %s", path, pe.Position.Line, msg)
	}
	// Type errors carry their position in the text only.
	if m := typeErrRE.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Errorf("--config %s:%s: %s: %s", path, m[1], m[2], m[3])
	}
	return fmt.Errorf("--config %s: %v", path, err)
}

var typeErrRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

// setKey sets the flag called name from a decoded TOML value, after checking
// the value's TOML type against the flag's kind.
func setKey(fs *flag.FlagSet, name string, v any) error {
	f := fs.Lookup(name)
	if f == nil || fileOnly[name] {
		return fmt.Errorf("unknown key %q", name)
	}
	kind := flagKind(f)
	if arr, ok := v.([]any); ok {
		if kind != kindList {
			return fmt.Errorf("%s: wrong type: want a single %s, not an array", name, kind)
		}
		for _, e := range arr {
			if err := setScalar(f, kind, e); err != nil {
				return err
			}
		}
		return nil
	}
	return setScalar(f, kind, v)
}

func setScalar(f *flag.Flag, kind string, v any) error {
	var s string
	ok := false
	switch x := v.(type) {
	case bool:
		s, ok = strconv.FormatBool(x), kind == kindBool
	case int64:
		s, ok = strconv.FormatInt(x, 10), kind == kindInt || kind == kindSize || (kind == kindDuration && x == 0)
	case string:
		s, ok = x, kind != kindBool
	}
	if !ok {
		return fmt.Errorf("%s: wrong type %s: want %s", f.Name, tomlTypeName(v), kindWant[kind])
	}
	if err := f.Value.Set(s); err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) {
			err = ne.Err
		}
		return fmt.Errorf("%s: invalid value %q: %v", f.Name, s, err)
	}
	return nil
}

var kindWant = map[string]string{
	kindBool: "true or false", kindInt: "an integer", kindSize: `a size such as 262144 or "4M"`,
	kindDuration: `a duration string such as "10s"`, kindString: "a string", kindList: "a string or an array of strings",
}

func tomlTypeName(v any) string {
	switch v.(type) {
	case bool:
		return "boolean"
	case int64:
		return "integer"
	case float64:
		return "float"
	case string:
		return "string"
	case time.Time:
		return "datetime"
	case map[string]any, []map[string]any:
		return "table"
	case []any:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}

// flagKind tells which TOML type a flag takes.
func flagKind(f *flag.Flag) string {
	if k, ok := f.Value.(interface{ kind() string }); ok {
		return k.kind()
	}
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return kindBool
	}
	if g, ok := f.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case int, int64, uint, uint64:
			return kindInt
		case time.Duration:
			return kindDuration
		}
	}
	return kindString
}

// flagValues records every flag's effective value and kind.
func flagValues(fs *flag.FlagSet) map[string]flagValue {
	vals := make(map[string]flagValue)
	fs.VisitAll(func(f *flag.Flag) {
		if !fileOnly[f.Name] {
			s, ok := f.Value.(interface{ wasSet() bool })
			vals[f.Name] = flagValue{f.Value.String(), flagKind(f), ok && !s.wasSet()}
		}
	})
	return vals
}

// printConfig writes the effective configuration as a TOML file that
// --config reads back to the same configuration. Keys without a value (a
// socket option left to the kernel, whatever its kind) are written as
// comments.
func printConfig(w io.Writer, cfg *config) error {
	for _, a := range cfg.listen {
		if !utf8.ValidString(a) {
			return fmt.Errorf("a listen address is not valid UTF-8, which a TOML file cannot hold")
		}
	}
	names := make([]string, 0, len(cfg.values))
	for n := range cfg.values {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	if cfg.configFile != "" {
		fmt.Fprintf(&b, "# effective configuration: %s and the command line\n", quoteOdd(cfg.configFile))
	} else {
		b.WriteString("# effective configuration: the command line and defaults\n")
	}
	for _, n := range names {
		v := cfg.values[n]
		switch {
		case n == "listen":
			b.WriteString("listen = [")
			for i, a := range cfg.listen {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString(tomlString(a))
			}
			b.WriteString("]\n")
		case v.unset:
			fmt.Fprintf(&b, "# %s = (not set)\n", n)
		case v.kind == kindBool:
			fmt.Fprintf(&b, "%s = %s\n", n, v.val)
		case v.kind == kindInt || v.kind == kindSize:
			// A TOML integer only when TOML reads it as the flag does:
			// decimal, no leading zero; else a string, which the flag parses.
			if i, err := strconv.ParseInt(v.val, 10, 64); err == nil && strconv.FormatInt(i, 10) == v.val {
				fmt.Fprintf(&b, "%s = %s\n", n, v.val)
				break
			}
			fmt.Fprintf(&b, "%s = %s\n", n, tomlString(v.val))
		default:
			if !utf8.ValidString(v.val) {
				return fmt.Errorf("the value of %s is not valid UTF-8, which a TOML file cannot hold", n)
			}
			fmt.Fprintf(&b, "%s = %s\n", n, tomlString(v.val))
		}
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if len(cfg.clientRules)+len(cfg.rules) == 0 {
		return nil
	}
	io.WriteString(w, "\n")
	return toml.NewEncoder(w).Encode(fileRules{ClientRule: cfg.clientRules, Rule: cfg.rules})
}

// quoteOdd returns s as it is, or quoted by strconv.Quote when it holds
// invalid UTF-8 or a control character other than tab: a path or value in
// a TOML comment (which cannot hold those; past a newline the rest would
// be read as TOML) or in an error, which must stay one line.
func quoteOdd(s string) string {
	if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r != '\t' && (r < 0x20 || r == 0x7f) }) {
		return strconv.Quote(s)
	}
	return s
}

// tomlString quotes valid UTF-8 s as a TOML basic string. (strconv.Quote
// writes \x escapes for some bytes, which TOML does not have.)
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
