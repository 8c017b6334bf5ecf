package sqlite

// This file gives the benchmarks in package sqlite_test what they need
// but the API should not offer.

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/tether-iot/tether"
)

// CreateDevicesInOneTx creates many devices in one transaction, so that a
// benchmark can set up 100k devices in seconds rather than one commit
// (and one fsync) each.
func CreateDevicesInOneTx(ctx context.Context, db *DB, ds []*tether.Device) error {
	return db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for _, d := range ds {
			labels, metadata, err := encodeMaps(d.Labels, d.Metadata)
			if err != nil {
				return err
			}
			if err := insertDevice(ctx, tx, d, labels, metadata); err != nil {
				return err
			}
		}
		return nil
	})
}

// DevicesByJSON lists devices as Devices does but matches labels with
// json_extract on the devices' JSON instead of the device_labels table:
// the alternative the benchmark compares Devices with.
func DevicesByJSON(ctx context.Context, db *DB, f tether.DeviceFilter) ([]*tether.Device, error) {
	q := "SELECT " + deviceColumns + " FROM devices d WHERE d.tenant_id = ? AND d.id > ?"
	args := []any{f.TenantID, f.After}
	for k, v := range f.Labels {
		q += " AND json_extract(d.labels, ?) = ?"
		args = append(args, fmt.Sprintf(`$."%s"`, strings.ReplaceAll(k, `"`, `\"`)), v)
	}
	q += " ORDER BY d.id LIMIT ?"
	args = append(args, f.Limit)
	rows, err := db.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ds []*tether.Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	return ds, rows.Err()
}

// WriteMessagesThenFail runs WriteMessages but fails with err at the end
// of its transaction, after every point is written, so that the
// transaction rolls back: the one failure a test cannot cause through the
// API.
func WriteMessagesThenFail(ctx context.Context, db *DB, msgs []tether.Message, err error) (int, error) {
	return db.writeMessages(ctx, msgs, func() error { return err })
}
