package trace

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// Trace is a whole trace file: its header and records.
type Trace struct {
	Path    string
	Header  Header
	Records []*Record
	// Sparse is true for llama.cpp dumps, which hold only each row's edge
	// values; Values are then placed by their flat index in Index.
	Sparse bool
}

// ReadFile reads a GRETA JSONL trace or a llama.cpp llama-eval-callback
// log, telling them apart by their first non-blank byte.
func ReadFile(path string) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	first, err := br.Peek(1)
	if err != nil {
		return nil, fmt.Errorf("%s: empty file", path)
	}
	var t *Trace
	if first[0] == '{' {
		t, err = readJSONL(br)
	} else {
		t, err = ReadEvalCallback(br)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	t.Path = path
	return t, nil
}

func readJSONL(r io.Reader) (*Trace, error) {
	t := &Trace{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<30)
	line := 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(strings.TrimSpace(string(b))) == 0 {
			continue
		}
		if line == 1 {
			if err := json.Unmarshal(b, &t.Header); err != nil || t.Header.Type != "header" {
				return nil, fmt.Errorf("line 1 is not a GRETA trace header")
			}
			continue
		}
		rec := &Record{}
		if err := json.Unmarshal(b, rec); err != nil {
			return nil, fmt.Errorf("line %d: %v", line, err)
		}
		if rec.Point == "" || len(rec.Shape) != 2 {
			return nil, fmt.Errorf("line %d: not a trace record (needs point and a 2-d shape)", line)
		}
		t.Records = append(t.Records, rec)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if line == 0 {
		return nil, fmt.Errorf("empty trace")
	}
	return t, nil
}
