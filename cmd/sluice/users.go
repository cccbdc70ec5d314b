package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"

	"sluice/handshake"
)

// loadUsers reads a users file: one "name:password" per line, '#' comments and
// blank lines ignored. Spaces and tabs around the name are not part of it,
// nor is a UTF-8 byte order mark at the start of the file; the password is
// everything after the first ':', byte for byte.
// RFC 1929 limits both fields to 1..255 bytes. Errors name the file and line.
// warn is non-empty when the file is readable by users other than its owner.
func loadUsers(file string) (users handshake.Users, warn string, err error) {
	path := quoteOdd(file) // as errors name it
	f, err := os.Open(file)
	if err != nil {
		return nil, "", fmt.Errorf("--users %s: %w", path, unwrapPathError(err))
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().Perm()&0o077 != 0 {
		warn = fmt.Sprintf("--users %s is accessible by other users (mode %#o); chmod 600 it", path, fi.Mode().Perm())
	}
	users = handshake.Users{}
	sc := bufio.NewScanner(f)
	line := 1 // past the loop: the line the scanner stopped at
	for ; sc.Scan(); line++ {
		text := bytes.TrimRight(sc.Bytes(), "\r")
		if line == 1 {
			text = bytes.TrimPrefix(text, []byte("\ufeff"))
		}
		if len(bytes.TrimSpace(text)) == 0 || bytes.HasPrefix(bytes.TrimSpace(text), []byte("#")) {
			continue
		}
		name, pass, ok := bytes.Cut(text, []byte(":"))
		name = bytes.Trim(name, " \t")
		switch {
		case !ok:
			return nil, "", fmt.Errorf("--users %s:%d: want name:password", path, line)
		case len(name) == 0 || len(name) > 255:
			return nil, "", fmt.Errorf("--users %s:%d: user name must be 1 to 255 bytes", path, line)
		case len(pass) == 0 || len(pass) > 255:
			return nil, "", fmt.Errorf("--users %s:%d: password must be 1 to 255 bytes", path, line)
		}
		if _, dup := users[string(name)]; dup {
			return nil, "", fmt.Errorf("--users %s:%d: user %q listed twice", path, line, name)
		}
		users[string(name)] = string(pass)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, "", fmt.Errorf("--users %s:%d: line too long", path, line)
		}
		return nil, "", fmt.Errorf("--users %s: %w", path, unwrapPathError(err)) // a directory: "read PATH: is a directory"
	}
	if len(users) == 0 {
		return nil, "", fmt.Errorf("--users %s: no users in file", path)
	}
	return users, warn, nil
}

// unwrapPathError drops the *os.PathError wrapper, whose text repeats the path.
func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
