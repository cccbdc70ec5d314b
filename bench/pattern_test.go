package bench

import "testing"

func TestPatternCheck(t *testing.T) {
	t.Parallel()
	p := newPattern(5)
	stream := p.fill(make([]byte, 3*patternBytes))
	// Any window at any offset matches; a flipped byte is caught by full
	// verification anywhere and by sampling only within the first 64 bytes.
	for _, off := range []int{0, 1, patternBytes - 1, patternBytes + 77} {
		b := append([]byte(nil), stream[off:off+patternBytes+100]...)
		if !p.check(b, uint64(off), VerifyFull) {
			t.Fatalf("offset %d: clean data rejected", off)
		}
		b[patternBytes+50] ^= 0x80
		if p.check(b, uint64(off), VerifyFull) {
			t.Errorf("offset %d: full verification missed a flipped byte", off)
		}
		if !p.check(b, uint64(off), VerifySample) || !p.check(b, uint64(off), VerifyNone) {
			t.Errorf("offset %d: sample/none looked past the first %d bytes", off, sampleBytes)
		}
		b[3] ^= 0x80
		if p.check(b, uint64(off), VerifySample) {
			t.Errorf("offset %d: sample verification missed a flipped byte at 3", off)
		}
	}
	if p2 := newPattern(6); p.check(p2.twice[:1000], 0, VerifyFull) {
		t.Error("patterns of different seeds match")
	}
}

func BenchmarkPatternCheck(b *testing.B) {
	p := newPattern(1)
	buf := p.fill(make([]byte, 256<<10))
	for _, v := range []Verify{VerifyFull, VerifySample} {
		b.Run(v.String(), func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				if !p.check(buf, 0, v) {
					b.Fatal("mismatch")
				}
			}
		})
	}
}
