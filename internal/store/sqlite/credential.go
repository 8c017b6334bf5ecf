package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/tether-iot/tether"
)

// AddCertificate registers a client certificate for a device and lifts a
// revocation of its fingerprint, if there was one. It returns an ECONFLICT
// error if the fingerprint is registered already (for any device) and an
// ENOTFOUND error if the tenant has no such device.
func (db *DB) AddCertificate(ctx context.Context, c *tether.Certificate) error {
	if c.CreatedAt.IsZero() {
		c.CreatedAt = time.Now()
	}
	c.CreatedAt = c.CreatedAt.UTC()
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM devices WHERE id = ? AND tenant_id = ?",
			c.DeviceID, c.TenantID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return deviceNotFound(c.DeviceID)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO device_certificates
			(fingerprint, tenant_id, device_id, subject, not_before, not_after, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`,
			c.Fingerprint, c.TenantID, c.DeviceID, c.Subject, nanos(c.NotBefore), nanos(c.NotAfter), nanos(c.CreatedAt))
		if constraintOf(err) == uniqueConstraint {
			return tether.Errorf(tether.ECONFLICT, "certificate %s is registered already", c.Fingerprint)
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "DELETE FROM revoked_certificates WHERE fingerprint = ?", c.Fingerprint)
		return err
	})
	if err != nil {
		return fmt.Errorf("add certificate of %s: %w", c.DeviceID, err)
	}
	return nil
}

const certificateColumns = "fingerprint, tenant_id, device_id, subject, not_before, not_after, created_at"

func scanCertificate(row interface{ Scan(...any) error }) (*tether.Certificate, error) {
	var (
		c                   tether.Certificate
		before, after, crtd int64
	)
	if err := row.Scan(&c.Fingerprint, &c.TenantID, &c.DeviceID, &c.Subject, &before, &after, &crtd); err != nil {
		return nil, err
	}
	c.NotBefore, c.NotAfter, c.CreatedAt = fromNanos(before), fromNanos(after), fromNanos(crtd)
	return &c, nil
}

// Certificate returns the registered certificate with the fingerprint, in
// whichever tenant it is, or an ENOTFOUND error.
func (db *DB) Certificate(ctx context.Context, fingerprint string) (*tether.Certificate, error) {
	return one(db.read.QueryRowContext(ctx,
		"SELECT "+certificateColumns+" FROM device_certificates WHERE fingerprint = ?", fingerprint), scanCertificate,
		func() error { return tether.Errorf(tether.ENOTFOUND, "certificate %s not found", fingerprint) }, "certificate %s", fingerprint)
}

// Certificates returns a device's registered certificates, oldest first.
func (db *DB) Certificates(ctx context.Context, tenantID, deviceID string) ([]*tether.Certificate, error) {
	rows, err := db.read.QueryContext(ctx, "SELECT "+certificateColumns+
		" FROM device_certificates WHERE device_id = ? AND tenant_id = ? ORDER BY created_at, fingerprint", deviceID, tenantID)
	if err != nil {
		return nil, fmt.Errorf("certificates of %s: %w", deviceID, err)
	}
	out, err := collect(rows, scanCertificate)
	if err != nil {
		return nil, fmt.Errorf("certificates of %s: %w", deviceID, err)
	}
	return out, nil
}

// RevokeCertificate deletes a device's certificate and records its
// fingerprint as revoked, in one transaction. It returns an ENOTFOUND
// error if the device has no such certificate.
func (db *DB) RevokeCertificate(ctx context.Context, tenantID, deviceID, fingerprint string, now time.Time) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM device_certificates WHERE fingerprint = ? AND device_id = ? AND tenant_id = ?",
			fingerprint, deviceID, tenantID)
		if err != nil {
			return err
		}
		if err := affected(res, func() error {
			return tether.Errorf(tether.ENOTFOUND, "device %q has no certificate %s", deviceID, fingerprint)
		}); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO revoked_certificates (fingerprint, tenant_id, device_id, revoked_at)
			VALUES (?, ?, ?, ?) ON CONFLICT (fingerprint) DO UPDATE SET revoked_at = excluded.revoked_at`,
			fingerprint, tenantID, deviceID, nanos(now))
		return err
	})
	if err != nil {
		return fmt.Errorf("revoke certificate of %s: %w", deviceID, err)
	}
	return nil
}

// Revoked reports whether a certificate fingerprint was revoked.
func (db *DB) Revoked(ctx context.Context, fingerprint string) (bool, error) {
	var n int
	err := db.read.QueryRowContext(ctx, "SELECT count(*) FROM revoked_certificates WHERE fingerprint = ?", fingerprint).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("revoked %s: %w", fingerprint, err)
	}
	return n > 0, nil
}

// AddCA makes a tenant trust a CA for device certificates. It returns an
// ECONFLICT error if the tenant trusts it already.
func (db *DB) AddCA(ctx context.Context, ca *tether.CA) error {
	if ca.CreatedAt.IsZero() {
		ca.CreatedAt = time.Now()
	}
	ca.CreatedAt = ca.CreatedAt.UTC()
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO device_cas (tenant_id, id, subject, not_after, pem, created_at)
			VALUES (?, ?, ?, ?, ?, ?)`, ca.TenantID, ca.ID, ca.Subject, nanos(ca.NotAfter), ca.PEM, nanos(ca.CreatedAt))
		switch constraintOf(err) {
		case uniqueConstraint:
			return tether.Errorf(tether.ECONFLICT, "CA %s is trusted already", ca.ID)
		case foreignKeyConstraint:
			return tether.Errorf(tether.ENOTFOUND, "tenant %q not found", ca.TenantID)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("add CA: %w", err)
	}
	return nil
}

// CAs returns the CAs a tenant trusts, or every tenant's when tenantID is
// empty, oldest first.
func (db *DB) CAs(ctx context.Context, tenantID string) ([]*tether.CA, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT tenant_id, id, subject, not_after, pem, created_at FROM device_cas
		WHERE ? = '' OR tenant_id = ? ORDER BY created_at, id`, tenantID, tenantID)
	if err != nil {
		return nil, fmt.Errorf("CAs: %w", err)
	}
	defer rows.Close()
	out := []*tether.CA{}
	for rows.Next() {
		var (
			ca          tether.CA
			after, crtd int64
		)
		if err := rows.Scan(&ca.TenantID, &ca.ID, &ca.Subject, &after, &ca.PEM, &crtd); err != nil {
			return nil, fmt.Errorf("CAs: %w", err)
		}
		ca.NotAfter, ca.CreatedAt = fromNanos(after), fromNanos(crtd)
		out = append(out, &ca)
	}
	return out, rows.Err()
}

// DeleteCA stops a tenant trusting a CA. It returns an ENOTFOUND error if
// the tenant does not trust it.
func (db *DB) DeleteCA(ctx context.Context, tenantID, id string) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM device_cas WHERE tenant_id = ? AND id = ?", tenantID, id)
		if err != nil {
			return err
		}
		if err := affected(res, func() error { return tether.Errorf(tether.ENOTFOUND, "CA %s not found", id) }); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete CA: %w", err)
	}
	return nil
}
