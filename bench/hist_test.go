package bench

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// within reports whether got is within the bucket precision of want.
func within(got, want time.Duration) bool {
	tol := float64(want)/subCount + 1
	return float64(got) >= float64(want)-tol && float64(got) <= float64(want)+tol
}

func TestHistogramPercentiles(t *testing.T) {
	t.Parallel()
	t.Run("uniform", func(t *testing.T) {
		var h Histogram
		for v := 1; v <= 100000; v++ {
			h.Record(time.Duration(v) * time.Microsecond)
		}
		for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
			want := time.Duration(q*100000) * time.Microsecond
			if got := h.Percentile(q); !within(got, want) {
				t.Errorf("p%v = %v, want %v within 1/%d", q*100, got, want, subCount)
			}
		}
		if h.Max() != 100*time.Millisecond || h.Min() != time.Microsecond || h.Count() != 100000 {
			t.Errorf("max %v min %v count %d", h.Max(), h.Min(), h.Count())
		}
	})
	t.Run("small exact", func(t *testing.T) {
		var h Histogram
		for _, v := range []time.Duration{3, 1, 2, 5, 4} {
			h.Record(v)
		}
		if got := h.Percentile(0.5); got != 3 {
			t.Errorf("p50 = %v, want 3ns", got)
		}
		if got := h.Percentile(1); got != 5 {
			t.Errorf("p100 = %v, want 5ns", got)
		}
	})
	t.Run("random against sort", func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		var h Histogram
		var vals []time.Duration
		for range 20000 {
			v := time.Duration(r.ExpFloat64() * float64(time.Millisecond))
			vals = append(vals, v)
			h.Record(v)
		}
		slices.Sort(vals)
		for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
			want := vals[int(q*float64(len(vals)))-1]
			if got := h.Percentile(q); !within(got, want) {
				t.Errorf("p%v = %v, want %v", q*100, got, want)
			}
		}
	})
	t.Run("merge", func(t *testing.T) {
		var a, b Histogram
		a.Record(time.Millisecond)
		b.Record(time.Second)
		b.Record(2 * time.Second)
		a.Merge(&b)
		if a.Count() != 3 || a.Max() != 2*time.Second || a.Min() != time.Millisecond {
			t.Errorf("merged: count %d max %v min %v", a.Count(), a.Max(), a.Min())
		}
		if got := a.Percentile(0.5); !within(got, time.Second) {
			t.Errorf("merged p50 = %v, want 1s", got)
		}
	})
	t.Run("empty and extremes", func(t *testing.T) {
		var h Histogram
		if h.Percentile(0.99) != 0 || h.Mean() != 0 {
			t.Error("empty histogram should report 0")
		}
		h.Record(-5)
		h.Record(time.Duration(1<<63 - 1))
		if h.Max() != time.Duration(1<<63-1) || h.Min() != 0 {
			t.Errorf("extremes: min %v max %v", h.Min(), h.Max())
		}
	})
}

func TestBucketsContiguous(t *testing.T) {
	t.Parallel()
	// Every bucket starts where the previous one ended.
	next := int64(0)
	for i := range numBuckets {
		lo, w := bucketRange(i)
		if lo != next {
			t.Fatalf("bucket %d starts at %d, want %d", i, lo, next)
		}
		if bucketOf(lo) != i || bucketOf(lo+w-1) != i {
			t.Fatalf("bucket %d [%d,+%d) does not map back", i, lo, w)
		}
		next = lo + w
	}
}

func TestHistogramRecordAllocs(t *testing.T) {
	var h Histogram
	d := 1234 * time.Microsecond
	if allocs := testing.AllocsPerRun(1000, func() { h.Record(d) }); allocs != 0 {
		t.Fatalf("Record: %v allocs/op, want 0", allocs)
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Record(time.Duration(i))
	}
}
