package bench

import (
	"math"
	"math/bits"
	"time"
)

// subBits is the number of bits of precision each power of two is split into:
// 2^subBits sub-buckets give a relative error under 1/2^subBits (1.6 %).
const (
	subBits    = 6
	subCount   = 1 << subBits
	numBuckets = subCount + (64-subBits-1)*subCount
)

// Histogram is a log-bucketed latency histogram in the manner of HDR
// histograms: values below 64 ns are exact, larger ones fall into one of 64
// buckets per power of two, so any reported percentile is within 1.6 % of the
// true value. The zero value is ready to use. Record never allocates; a
// Histogram is not safe for concurrent use, so each worker keeps its own and
// the results are merged with Merge.
type Histogram struct {
	counts   [numBuckets]uint64
	n        uint64
	sum      float64
	min, max int64
}

// bucketOf returns the bucket index of a non-negative value.
func bucketOf(v int64) int {
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - subBits - 1
	return subCount + shift*subCount + int(v>>shift) - subCount
}

// bucketRange returns the smallest value and the width of bucket i.
func bucketRange(i int) (lo, width int64) {
	if i < subCount {
		return int64(i), 1
	}
	shift := (i - subCount) / subCount
	sub := int64((i-subCount)%subCount + subCount)
	return sub << shift, 1 << shift
}

// Record adds one observation. Negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
}

// Merge adds every observation of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// Count returns the number of observations recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Max returns the largest observation, exactly; 0 when empty.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Min returns the smallest observation, exactly; 0 when empty.
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) }

// Mean returns the arithmetic mean of the observations; 0 when empty.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Percentile returns the value below which the fraction q (0..1) of the
// observations fall, as the middle of its bucket clamped to the exact minimum
// and maximum; 0 when empty.
func (h *Histogram) Percentile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	// Invariant: once c is added, seen is the number of observations in
	// buckets 0 to i.
	for i, c := range h.counts {
		seen += c
		if seen < rank {
			continue
		}
		lo, w := bucketRange(i)
		v := lo + (w-1)/2
		return time.Duration(min(max(v, h.min), h.max))
	}
	return time.Duration(h.max)
}
