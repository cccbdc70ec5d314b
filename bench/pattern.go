package bench

import (
	"bytes"
	"fmt"
)

// patternBytes is the period of the source pattern.
const patternBytes = 64 << 10

// pattern is the deterministic byte stream a source writes: one block of
// patternBytes drawn from a seed, repeated forever. It is read-only once
// built and shared by every connection.
type pattern struct {
	twice []byte // the block, twice, so any window up to patternBytes is contiguous
}

// newPattern builds the block for seed with splitmix64.
func newPattern(seed uint64) *pattern {
	p := &pattern{twice: make([]byte, 2*patternBytes)}
	x := seed
	for i := 0; i < patternBytes; i += 8 {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		z ^= z >> 31
		for j := range 8 {
			p.twice[i+j] = byte(z >> (8 * j))
		}
	}
	copy(p.twice[patternBytes:], p.twice[:patternBytes])
	return p
}

// fill returns buf rounded down to a whole number of periods (at least one)
// and filled with the pattern from offset 0.
func (p *pattern) fill(buf []byte) []byte {
	n := max(len(buf)/patternBytes, 1) * patternBytes
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	for i := 0; i < n; i += patternBytes {
		copy(buf[i:], p.twice[:patternBytes])
	}
	return buf
}

// Verify says how much of a downloaded stream the client compares with the
// source pattern.
type Verify int

// The verification levels. VerifyFull compares every byte; VerifySample
// compares the first 64 bytes of each read; VerifyNone only counts, and
// for uploads skips the sink's count.
const (
	VerifyFull Verify = iota
	VerifySample
	VerifyNone
)

var verifyNames = [...]string{VerifyFull: "full", VerifySample: "sample", VerifyNone: "none"}

// String returns the level's name as the command line spells it.
func (v Verify) String() string {
	if v >= 0 && int(v) < len(verifyNames) {
		return verifyNames[v]
	}
	return fmt.Sprintf("Verify(%d)", int(v))
}

// ParseVerify returns the level named s ("full", "sample" or "none").
func ParseVerify(s string) (Verify, error) {
	for v, name := range verifyNames {
		if name == s {
			return Verify(v), nil
		}
	}
	return 0, fmt.Errorf("bench: unknown verify level %q", s)
}

// sampleBytes is how much of each read VerifySample compares.
const sampleBytes = 64

// check compares b, found at stream offset off, with the pattern at the
// given level and reports whether it matches.
func (p *pattern) check(b []byte, off uint64, v Verify) bool {
	switch v {
	case VerifyNone:
		return true
	case VerifySample:
		b = b[:min(len(b), sampleBytes)]
	}
	// Invariant: b[:done] matched the pattern from off.
	for done := 0; done < len(b); {
		at := int((off + uint64(done)) % patternBytes)
		n := min(len(b)-done, patternBytes)
		if !bytes.Equal(b[done:done+n], p.twice[at:at+n]) {
			return false
		}
		done += n
	}
	return true
}
