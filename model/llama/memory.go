package llama

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// MaxContext is the largest context size GRETA accepts: token positions
// are int32 throughout (the batch, rope and the KV cache index them so).
const MaxContext = math.MaxInt32

// MemoryNeeded returns the bytes a run state for a context of ctx tokens,
// processing up to batch tokens per forward call, allocates beyond the
// weights: the KV cache, the activation buffers (with logits for every row
// of the batch, as a batched engine needs) and the attention scratch. It
// counts float32 values, as the CPU backend holds them (the CUDA backend's
// f16 cache needs less, the float64 oracle twice as much), with the
// context rounded up to 16 as the CPU cache pads it. Every product is
// checked for overflow; ctx must be 1..MaxContext and batch ≥ 1.
func MemoryNeeded(c *Config, ctx, batch int) (int64, error) {
	return memoryNeeded(c, ctx, batch, true)
}

func memoryNeeded(c *Config, ctx, batch int, allLogits bool) (int64, error) {
	if ctx < 1 {
		return 0, fmt.Errorf("context size %d, expected ≥ 1", ctx)
	}
	if ctx > MaxContext {
		return 0, fmt.Errorf("context size %d exceeds the limit of %d tokens (positions are int32)", ctx, MaxContext)
	}
	if batch < 1 {
		return 0, fmt.Errorf("batch size %d, expected ≥ 1", batch)
	}
	batch = min(batch, ctx)
	ctx16 := int64(ctx+15) / 16 * 16
	qd, kvd := int64(c.NHeads)*int64(c.HeadDim), int64(c.KVDim())
	logitRows := int64(1)
	if allLogits {
		logitRows = int64(batch)
	}
	var m checked
	kv := m.mul(2, int64(c.NLayers), ctx16, kvd) // keys and values
	rowFloats := m.add(3*int64(c.Dim), 2*qd, 2*kvd, int64(c.HiddenDim))
	act := m.add(m.mul(int64(batch), rowFloats), m.mul(logitRows, int64(c.Dim)+int64(c.VocabSize)))
	// The CPU backend's attention keeps one row of scores per query head
	// of a KV group, per worker.
	scratch := m.mul(int64(runtime.GOMAXPROCS(0)), int64(c.NHeads/max(c.NKVHeads, 1)), ctx16)
	total := m.mul(4, m.add(kv, act, scratch))
	if m.overflow {
		return 0, fmt.Errorf("context of %d tokens with batch %d: the KV cache and activations need more than 2^63 bytes", ctx, batch)
	}
	return total, nil
}

// checked is int64 arithmetic that remembers an overflow (operands ≥ 0).
type checked struct{ overflow bool }

func (m *checked) mul(xs ...int64) int64 {
	p := uint64(1)
	for _, x := range xs {
		hi, lo := bits.Mul64(p, uint64(x))
		if hi != 0 || lo > math.MaxInt64 {
			m.overflow = true
			return math.MaxInt64
		}
		p = lo
	}
	return int64(p)
}

func (m *checked) add(xs ...int64) int64 {
	s := int64(0)
	for _, x := range xs {
		if x > math.MaxInt64-s {
			m.overflow = true
			return math.MaxInt64
		}
		s += x
	}
	return s
}

// MemoryError says that an allocation does not fit.
type MemoryError struct {
	What      string // what was asked for
	Need      int64  // bytes asked for
	Available int64  // bytes available
	Source    string // where Available comes from
	Hint      string // what to do, "" if nothing to say
}

func (e *MemoryError) Error() string {
	msg := fmt.Sprintf("%s needs %s, but only %s of memory is available (%s)", e.What, HumanBytes(e.Need), HumanBytes(e.Available), e.Source)
	if e.Hint != "" {
		msg += "; " + e.Hint
	}
	return msg
}

// CheckMemory returns a *MemoryError when need bytes do not fit in the
// memory available now (see AvailableMemory). Where that cannot be read
// (not Linux, or /proc unreadable) it returns nil: the check is a guard,
// not a promise.
func CheckMemory(need int64) error {
	return checkMemory("this run", "", need)
}

func checkMemory(what, hint string, need int64) error {
	avail, src, err := AvailableMemory()
	if err != nil {
		return nil
	}
	if need > avail {
		return &MemoryError{What: what, Need: need, Available: avail, Source: src, Hint: hint}
	}
	return nil
}

// AvailableMemory returns the bytes a new allocation can take without
// swapping, and where the figure comes from: MemAvailable in /proc/meminfo
// (the kernel's estimate, which counts reclaimable page cache, the model's
// own mapped pages among them), lowered to the free room under the
// process's cgroup memory limit when there is one (a container's
// /proc/meminfo shows the host's memory). The model's weights are loaded
// before a run state is made, so what they hold on the heap is already
// taken from this figure; its mapped file pages are not subtracted, as the
// kernel can drop and re-read them.
func AvailableMemory() (int64, string, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, "", err
	}
	avail, ok := meminfoField(b, "MemAvailable:")
	if !ok {
		return 0, "", errors.New("/proc/meminfo has no MemAvailable")
	}
	src := "MemAvailable in /proc/meminfo"
	if room, ok := cgroupRoom(); ok && room < avail {
		avail, src = room, "the cgroup memory limit less its usage"
	}
	return avail, src, nil
}

// meminfoField reads a "Key:   N kB" line of /proc/meminfo as bytes.
func meminfoField(b []byte, key string) (int64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == key {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || n < 0 || n > math.MaxInt64/1024 {
				return 0, false
			}
			return n * 1024, true
		}
	}
	return 0, false
}

// cgroupRoom returns limit − usage of the process's cgroup (v2, else v1),
// false when there is no limit or it cannot be read.
func cgroupRoom() (int64, bool) {
	read := func(p string) (int64, bool) {
		b, err := os.ReadFile(p)
		if err != nil {
			return 0, false
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return n, err == nil // "max" fails: no limit
	}
	room := func(limit, usage string) (int64, bool) {
		l, ok1 := read(limit)
		u, ok2 := read(usage)
		if !ok1 || !ok2 || l <= 0 || l >= 1<<60 {
			return 0, false
		}
		return max(l-u, 0), true
	}
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if p, ok := strings.CutPrefix(line, "0::"); ok {
				dir := "/sys/fs/cgroup" + p
				if r, ok := room(dir+"/memory.max", dir+"/memory.current"); ok {
					return r, true
				}
			}
		}
	}
	return room("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")
}

// checkState is NewState's guard: the sizes are in range and the state
// fits in memory, before anything is allocated.
func (m *Model) checkState(ctx, batch int, allLogits bool) error {
	need, err := memoryNeeded(m.Config, ctx, batch, allLogits)
	if err != nil {
		return err
	}
	return checkMemory(fmt.Sprintf("a context of %d tokens (KV cache and activations)", ctx), "use a smaller context", need)
}

// HumanBytes formats a byte count with a binary unit (KiB, MiB, ...).
func HumanBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n)/1024, 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, units[i])
}
