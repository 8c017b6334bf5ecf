package provision

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/tether-iot/tether"
)

// MaxImportRows is the most devices one import takes. A bigger fleet is
// imported in several files.
const MaxImportRows = 100_000

// ImportError is a refused import: every bad row, in row order. Nothing
// of the import was created. Its code is EINVALID (tether.ErrorCode finds
// the *tether.Error it unwraps to), and its message names the first bad
// row and how many more there are.
type ImportError struct {
	Rows []tether.RowError
}

// Error implements the error interface.
func (e *ImportError) Error() string { return "import: " + e.message() }

// RowErrors returns the bad rows, for an edge that reports them without
// knowing this type.
func (e *ImportError) RowErrors() []tether.RowError { return e.Rows }

// Unwrap returns the EINVALID *tether.Error an edge reports.
func (e *ImportError) Unwrap() error {
	return &tether.Error{Code: tether.EINVALID, Message: e.message()}
}

func (e *ImportError) message() string {
	if len(e.Rows) == 0 {
		return "the import was refused; nothing was imported"
	}
	r := e.Rows[0]
	var b strings.Builder
	fmt.Fprintf(&b, "row %d", r.Row)
	if r.ID != "" {
		fmt.Fprintf(&b, " (id %q)", r.ID)
	}
	fmt.Fprintf(&b, ": %s", r.Error)
	switch n := len(e.Rows) - 1; n {
	case 0:
	case 1:
		b.WriteString("; and 1 more bad row")
	default:
		fmt.Fprintf(&b, "; and %d more bad rows", n)
	}
	b.WriteString("; nothing was imported")
	return b.String()
}

// importError returns an *ImportError of the rows sorted by row, or nil
// if there are none.
func importError(rows []tether.RowError) error {
	if len(rows) == 0 {
		return nil
	}
	slices.SortStableFunc(rows, func(a, b tether.RowError) int { return a.Row - b.Row })
	return &ImportError{Rows: rows}
}

// CSV columns.
const (
	colID          = "id"
	colName        = "name"
	colProfile     = "profile"
	colLabels      = "labels"
	colFingerprint = "certificate_fingerprint"
)

var csvColumns = []string{colID, colName, colProfile, colLabels, colFingerprint}

// ParseCSV reads devices to import from CSV text. The first record is a
// header naming the columns, in any order: id (required), name, profile,
// labels and certificate_fingerprint. Labels are "key=value" pairs
// separated by ';' ("site=north;floor=2"), so a label value read from CSV
// cannot hold a ';' (JSON has no such limit). Every cell is trimmed of
// spaces. Rows count from 1 after the header; blank lines are skipped.
//
// A bad header is an EINVALID *tether.Error; bad rows are an
// *ImportError naming each. ParseCSV checks only what the format says;
// Import checks the values.
func ParseCSV(r io.Reader) ([]tether.DeviceImport, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, tether.Errorf(tether.EINVALID, "the CSV file is empty; its first line must be a header such as %s", strings.Join(csvColumns, ","))
	}
	if err != nil {
		return nil, tether.Errorf(tether.EINVALID, "CSV header: %v", csvMessage(err))
	}
	cols := map[string]int{}
	var unknown []string
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(h))
		if i == 0 {
			h = strings.TrimPrefix(h, "\ufeff") // the byte order mark spreadsheets write
		}
		if _, dup := cols[h]; dup {
			return nil, tether.Errorf(tether.EINVALID, "CSV header: column %q appears twice", h)
		}
		if !slices.Contains(csvColumns, h) {
			unknown = append(unknown, fmt.Sprintf("%q", truncate(h)))
		}
		cols[h] = i
	}
	if len(unknown) > 0 {
		return nil, tether.Errorf(tether.EINVALID, "CSV header: unknown column %s; the columns are %s",
			strings.Join(unknown, ", "), strings.Join(csvColumns, ", "))
	}
	if _, ok := cols[colID]; !ok {
		return nil, tether.Errorf(tether.EINVALID, "CSV header: the id column is missing; the columns are %s", strings.Join(csvColumns, ", "))
	}
	cr.FieldsPerRecord = len(header)

	cell := func(rec []string, col string) string {
		if i, ok := cols[col]; ok && i < len(rec) {
			return strings.TrimSpace(rec[i])
		}
		return ""
	}
	var (
		out []tether.DeviceImport
		bad []tether.RowError
	)
	for row := 1; ; row++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if row > MaxImportRows {
			return nil, tether.Errorf(tether.ETOOLARGE, "the file has more than %d rows; import it in parts", MaxImportRows)
		}
		if err != nil {
			var pe *csv.ParseError
			bad = append(bad, tether.RowError{Row: row, ID: cell(rec, colID), Error: csvMessage(err)})
			if errors.As(err, &pe) && errors.Is(pe.Err, csv.ErrFieldCount) {
				continue // the reader goes on after a short or long record
			}
			break // after a quoting error the rest cannot be trusted
		}
		d := tether.DeviceImport{
			ID:          cell(rec, colID),
			Name:        cell(rec, colName),
			Profile:     cell(rec, colProfile),
			Fingerprint: cell(rec, colFingerprint),
		}
		labels, err := parseLabels(cell(rec, colLabels))
		if err != nil {
			bad = append(bad, tether.RowError{Row: row, ID: d.ID, Error: err.Error()})
			continue
		}
		d.Labels = labels
		out = append(out, d)
	}
	if err := importError(bad); err != nil {
		return nil, err
	}
	return out, nil
}

// csvMessage is a CSV reader's error without its "record on line" prefix
// repeated, but with the line, since rows and lines differ when a cell
// spans lines.
func csvMessage(err error) string {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		if errors.Is(pe.Err, csv.ErrFieldCount) {
			return fmt.Sprintf("line %d: wrong number of cells for the header's columns", pe.Line)
		}
		return fmt.Sprintf("line %d, column %d: %v", pe.Line, pe.Column, pe.Err)
	}
	return err.Error()
}

// parseLabels reads "k=v;k=v". Empty pairs (a trailing ';') are skipped.
func parseLabels(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	labels := map[string]string{}
	for pair := range strings.SplitSeq(s, ";") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return nil, fmt.Errorf("labels: %q is not key=value (labels are written k=v;k=v)", truncate(pair))
		}
		if _, dup := labels[k]; dup {
			return nil, fmt.Errorf("labels: key %q appears twice", truncate(k))
		}
		labels[k] = v
	}
	return labels, nil
}

// ParseJSON reads devices to import from a JSON array of objects with the
// fields of tether.DeviceImport. A field it does not know, or a value of
// the wrong type, is an error of its row (rows count from 1); broken JSON
// ends the reading there. Bad rows are an *ImportError naming each; input
// that is not an array is an EINVALID *tether.Error.
func ParseJSON(r io.Reader) ([]tether.DeviceImport, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('[') {
		return nil, tether.Errorf(tether.EINVALID, "the body must be a JSON array of devices")
	}
	var (
		out []tether.DeviceImport
		bad []tether.RowError
	)
	row := 0
	for dec.More() {
		row++
		if row > MaxImportRows {
			return nil, tether.Errorf(tether.ETOOLARGE, "the array has more than %d devices; import it in parts", MaxImportRows)
		}
		var d tether.DeviceImport
		err := dec.Decode(&d)
		var syn *json.SyntaxError
		switch {
		case err == nil:
			out = append(out, d)
			continue
		case errors.As(err, &syn), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			bad = append(bad, tether.RowError{Row: row, Error: "broken JSON: " + strings.TrimPrefix(err.Error(), "json: ")})
			return nil, importError(bad)
		default:
			// The decoder read the whole value before it failed to store
			// it, so it can go on with the next.
			bad = append(bad, tether.RowError{Row: row, ID: d.ID, Error: strings.TrimPrefix(err.Error(), "json: ")})
		}
	}
	if len(bad) == 0 {
		if tok, err := dec.Token(); err != nil || tok != json.Delim(']') {
			return nil, tether.Errorf(tether.EINVALID, "the body must be a JSON array of devices; it ends badly")
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return nil, tether.Errorf(tether.EINVALID, "the body has more after its JSON array")
		}
	}
	if err := importError(bad); err != nil {
		return nil, err
	}
	return out, nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
