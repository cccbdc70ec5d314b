package main

// Where a configuration file's keys and rules are: the TOML library gives
// positions for syntax and type errors only, so the lines that errors name
// are found here, and the rule tables are checked before they are decoded.

import (
	"cmp"
	"fmt"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// keyLine finds the line that sets key k (a top-level key, dotted or not,
// or one inside the last table that holds it); 0 when not found. The TOML
// library gives positions for syntax and type errors only.
func keyLine(text string, k toml.Key) int {
	want := dottedKey(strings.Join(k, "."))
	cur := ""
	found := 0
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			cur = strings.Trim(line, "[] \t")
			if j := strings.Index(cur, "]"); j >= 0 {
				cur = cur[:j]
			}
			cur = dottedKey(cur)
			if found == 0 && cur == want {
				found = i + 1 // the key is a table: its header
			}
			continue
		}
		name, _, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if name = dottedKey(name); cur != "" {
			name = cur + "." + name
		}
		if name == want {
			found = i + 1
			if cur == "" {
				return found
			}
		}
	}
	return found
}

// dottedKey writes a TOML key as its parts joined by dots, without the
// spaces and quotes around each.
func dottedKey(s string) string {
	parts := strings.Split(s, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(parts, ".")
}

// tableLines finds the line each table of the array of tables name starts
// on, in order: its [[name]] header (header true), or where it starts in an
// inline array, name = [{...}, {...}]. A header may have blanks inside its
// brackets, quotes around name and a comment after it ("[[ rule ]]  # no
// SMTP"). An element that is not a table has its line too.
func tableLines(text, name string) (lines []int, header bool) {
	for i, line := range strings.Split(text, "\n") {
		h, _, _ := strings.Cut(line, "#")
		h = strings.Join(strings.Fields(h), "")
		if len(h) > 4 && strings.HasPrefix(h, "[[") && strings.HasSuffix(h, "]]") && dottedKey(h[2:len(h)-2]) == name {
			lines = append(lines, i+1)
		}
	}
	if len(lines) > 0 {
		return lines, true
	}
	return elementLines(text, keyLine(text, toml.Key{name})), false
}

// elementLines returns the line each element of the array assigned on line
// (from 1) starts on; nil when line is 0 or holds no array. It skips
// strings and comments, which may hold brackets, braces and commas.
func elementLines(text string, line int) []int {
	if line < 1 {
		return nil
	}
	off := 0
	for n := 1; n < line && off < len(text); n++ {
		i := strings.IndexByte(text[off:], '\n')
		if i < 0 {
			return nil
		}
		off += i + 1
	}
	eq := strings.IndexByte(text[off:], '=')
	if eq < 0 {
		return nil
	}
	var lines []int
	depth, want := 0, false // want: the next value at depth 1 starts an element
	for i := off + eq + 1; i < len(text); i++ {
		c := text[i]
		switch {
		case c == '\n':
			line++
			continue
		case c == ' ' || c == '\t' || c == '\r':
			continue
		case c == '#':
			for i+1 < len(text) && text[i+1] != '\n' {
				i++
			}
			continue
		}
		if depth == 0 && c != '[' {
			return nil // not an array
		}
		if depth == 1 && want && c != ']' && c != ',' {
			lines, want = append(lines, line), false
		}
		switch c {
		case '[', '{':
			depth++
			want = depth == 1 && c == '['
		case ']', '}':
			if depth--; depth <= 0 {
				return lines
			}
		case ',':
			want = depth == 1
		case '"', '\'':
			end := skipString(text, i)
			line += strings.Count(text[i:end], "\n")
			i = end - 1
		}
	}
	return lines
}

// skipString returns the index just past the TOML string that starts at
// text[i], a quote: basic ("...", escapes and all), literal ('...') or
// either's multi-line form (three quotes, which may end with up to two more
// quotes that belong to the string).
func skipString(text string, i int) int {
	q := text[i]
	delim := text[i : i+1]
	if strings.HasPrefix(text[i:], strings.Repeat(delim, 3)) {
		delim = strings.Repeat(delim, 3)
	}
	for j := i + len(delim); j < len(text); j++ {
		switch {
		case q == '"' && text[j] == '\\':
			j++
		case strings.HasPrefix(text[j:], delim):
			j += len(delim)
			for n := 0; n < 2 && len(delim) == 3 && j < len(text) && text[j] == q; n++ {
				j++
			}
			return j
		case len(delim) == 1 && text[j] == '\n':
			return j // unterminated: the parser said so already
		}
	}
	return len(text)
}

// ruleKinds are the keys of a [[rule]] or [[client-rule]] table
// (ruleSpec's fields): false for a string, true for an array of strings.
var ruleKinds = map[string]bool{"action": false, "commands": true, "cidr": true, "ports": true, "domains": true}

// checkRuleTables checks v, the decoded value of the rule array name, as
// decoding it into ruleSpec would, and returns the line of the first error
// (lines are its tables', from tableLines; keyAt the line of the first key
// that sets name): v must be an array of tables, each table's keys
// ruleSpec's (any case, as the decoder matches them, each once) with their
// types.
func checkRuleTables(text, name string, v any, lines []int, header bool, keyAt int) (int, error) {
	elems, ok := v.([]any)
	if tables, isTables := v.([]map[string]any); isTables {
		elems, ok = make([]any, len(tables)), true
		for i, t := range tables {
			elems[i] = t
		}
	}
	if !ok {
		return keyAt, fmt.Errorf("%s: wrong type %s: want an array of tables, [[%s]]", name, tomlTypeName(v), name)
	}
	for i, e := range elems {
		t, ok := e.(map[string]any)
		if !ok {
			return nth(lines, i, keyAt), fmt.Errorf("[[%s]] #%d: wrong type %s: want a table", name, i+1, tomlTypeName(e))
		}
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		given := make(map[string]string, len(keys)) // lower case: as written
		for _, k := range keys {
			line := nth(lines, i, keyAt)
			if header {
				line = cmp.Or(tableKeyLine(text, name, k, line), line)
			}
			lower := strings.ToLower(k)
			isList, known := ruleKinds[lower]
			first, twice := given[lower]
			given[lower] = k
			switch {
			case twice:
				// Two keys the decoder reads as one field: which of the
				// two it took would change from one parse to the next.
				return line, fmt.Errorf("[[%s]] #%d: key %q given twice (also as %q)", name, i+1, k, first)
			case !known:
				return line, fmt.Errorf("unknown key %q in [[%s]] #%d", k, name, i+1)
			case !isList && !isString(t[k]):
				return line, fmt.Errorf("[[%s]] #%d: %s: wrong type %s: want a string", name, i+1, k, tomlTypeName(t[k]))
			case isList && !isStrings(t[k]):
				return line, fmt.Errorf("[[%s]] #%d: %s: wrong type %s: want an array of strings", name, i+1, k, tomlTypeName(t[k]))
			}
		}
	}
	return 0, nil
}

// nth returns lines[i], or or when lines has no such element.
func nth(lines []int, i, or int) int {
	if i < len(lines) {
		return lines[i]
	}
	return or
}

func isString(v any) bool { _, ok := v.(string); return ok }

func isStrings(v any) bool {
	a, ok := v.([]any)
	for _, e := range a {
		ok = ok && isString(e)
	}
	return ok
}

// tableKeyLine finds the line that sets key k of the [[name]] table whose
// header is on line from: "k = ..." or a [name.k] header after it, before
// any other header; 0 when not found.
func tableKeyLine(text, name, k string, from int) int {
	lines := strings.Split(text, "\n")
	for i := from; i < len(lines); i++ { // lines[from] is the line after the header
		line := strings.TrimSpace(lines[i])
		if strings.HasPrefix(line, "[") {
			line, _, _ = strings.Cut(line, "#")
			h := dottedKey(strings.Trim(line, "[] \t"))
			if h == name+"."+k || strings.HasPrefix(h, name+"."+k+".") {
				return i + 1
			}
			if !strings.HasPrefix(h, name+".") {
				return 0
			}
			continue
		}
		if key, _, ok := strings.Cut(line, "="); ok {
			if first, _, _ := strings.Cut(dottedKey(key), "."); first == k {
				return i + 1
			}
		}
	}
	return 0
}
