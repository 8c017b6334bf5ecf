package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/tether-iot/tether"
)

// Provisioning: bulk imports of devices and provisioning keys (see
// migration 0007), with which devices register themselves.

// inChunk is how many values an IN list takes at most, well under
// SQLite's oldest limit of 999 parameters.
const inChunk = 500

// CheckImport returns what would make ImportDevices refuse these devices
// and certificates, without storing anything: see ImportDevices.
func (db *DB) CheckImport(ctx context.Context, ds []*tether.Device, certs []*tether.Certificate) ([]tether.RowError, error) {
	var problems []tether.RowError
	err := db.inReadTx(ctx, func(tx *sql.Tx) error {
		var err error
		problems, err = importProblems(ctx, tx, ds, certs)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("check import: %w", err)
	}
	return problems, nil
}

// ImportDevices stores devices (each with its labels, profile and token
// hash) and certificates registered for them, all in one transaction,
// unless one of the devices' IDs is taken (in any tenant), one of the
// certificates' fingerprints is registered already or one of the
// devices' profiles does not exist: then it stores nothing and returns one
// RowError for each device at fault, with its ID and what is wrong (Row
// is left 0 for the caller, which knows the rows). A zero CreatedAt is
// the current time, a zero UpdatedAt CreatedAt. The devices must be
// valid and their IDs distinct; certificates must name devices of ds.
//
// The checks run inside the transaction that inserts, so nothing created
// meanwhile can slip between them. The inserts go through statements
// prepared once per import: 10,000 devices with two labels each take
// about 0.1 s (TestImportSpeed in internal/provision).
func (db *DB) ImportDevices(ctx context.Context, ds []*tether.Device, certs []*tether.Certificate) ([]tether.RowError, error) {
	var problems []tether.RowError
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		if problems, err = importProblems(ctx, tx, ds, certs); err != nil || len(problems) > 0 {
			return err
		}
		return insertImport(ctx, tx, ds, certs)
	})
	if err != nil {
		return nil, fmt.Errorf("import devices: %w", err)
	}
	return problems, nil
}

// importProblems finds the devices that exist, the certificates that are
// registered and the profiles that are missing.
func importProblems(ctx context.Context, tx *sql.Tx, ds []*tether.Device, certs []*tether.Certificate) ([]tether.RowError, error) {
	bad := map[string][]string{} // device ID → what is wrong with it
	ids := make([]string, len(ds))
	for i, d := range ds {
		ids[i] = d.ID
	}
	if err := inChunks(ctx, tx, "SELECT id FROM devices WHERE id IN", ids, nil, func(id string) {
		bad[id] = append(bad[id], fmt.Sprintf("device %q already exists", id))
	}); err != nil {
		return nil, err
	}

	fps := make([]string, len(certs))
	owner := make(map[string]string, len(certs))
	for i, c := range certs {
		fps[i], owner[c.Fingerprint] = c.Fingerprint, c.DeviceID
	}
	if err := inChunks(ctx, tx, "SELECT fingerprint FROM device_certificates WHERE fingerprint IN", fps, nil, func(fp string) {
		bad[owner[fp]] = append(bad[owner[fp]], fmt.Sprintf("certificate %s is registered already", fp))
	}); err != nil {
		return nil, err
	}

	// Profiles are few; each tenant's are looked up once.
	wanted := map[[2]string]bool{}
	for _, d := range ds {
		if d.ProfileID != "" {
			wanted[[2]string{d.TenantID, d.ProfileID}] = false
		}
	}
	for k := range wanted {
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM profiles WHERE tenant_id = ? AND id = ?", k[0], k[1]).Scan(&n); err != nil {
			return nil, err
		}
		wanted[k] = n > 0
	}
	for _, d := range ds {
		if d.ProfileID != "" && !wanted[[2]string{d.TenantID, d.ProfileID}] {
			bad[d.ID] = append(bad[d.ID], fmt.Sprintf("profile %q does not exist", d.ProfileID))
		}
	}

	var problems []tether.RowError
	for _, d := range ds {
		if msgs, ok := bad[d.ID]; ok {
			problems = append(problems, tether.RowError{ID: d.ID, Error: strings.Join(msgs, "; ")})
			delete(bad, d.ID) // report a device once, should ds repeat it
		}
	}
	return problems, nil
}

// inChunks runs "<query> (?, ?, …)" over values in chunks, with args
// before the values, and calls found with the one column of each row.
func inChunks(ctx context.Context, tx *sql.Tx, query string, values []string, args []any, found func(string)) error {
	for len(values) > 0 {
		n := min(len(values), inChunk)
		a := append(append(make([]any, 0, len(args)+n), args...), anys(values[:n])...)
		rows, err := tx.QueryContext(ctx, query+" ("+strings.TrimSuffix(strings.Repeat("?, ", n), ", ")+")", a...)
		if err != nil {
			return err
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				rows.Close()
				return err
			}
			found(s)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		values = values[n:]
	}
	return nil
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// importer inserts devices through statements prepared once for many.
type importer struct {
	device, label, cert *sql.Stmt
}

func newImporter(ctx context.Context, tx *sql.Tx) (*importer, error) {
	var (
		im  importer
		err error
	)
	if im.device, err = tx.PrepareContext(ctx, `INSERT INTO devices
		(id, tenant_id, name, labels, metadata, token_hash, profile_id, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`); err != nil {
		return nil, err
	}
	if im.label, err = tx.PrepareContext(ctx, "INSERT INTO device_labels (device_id, tenant_id, key, value) VALUES (?, ?, ?, ?)"); err != nil {
		im.close()
		return nil, err
	}
	if im.cert, err = tx.PrepareContext(ctx, `INSERT INTO device_certificates
		(fingerprint, tenant_id, device_id, subject, not_before, not_after, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`); err != nil {
		im.close()
		return nil, err
	}
	return &im, nil
}

func (im *importer) close() {
	for _, s := range []*sql.Stmt{im.device, im.label, im.cert} {
		if s != nil {
			s.Close()
		}
	}
}

// insert adds one device, filling in its times and empty maps as
// CreateDevice does.
func (im *importer) insert(ctx context.Context, d *tether.Device) error {
	labels, metadata, err := fillDevice(d)
	if err != nil {
		return err
	}
	var profile any
	if d.ProfileID != "" {
		profile = d.ProfileID
	}
	_, err = im.device.ExecContext(ctx, d.ID, d.TenantID, d.Name, labels, metadata, d.TokenHash, profile,
		nanos(d.CreatedAt), nanos(d.UpdatedAt))
	switch constraintOf(err) {
	case uniqueConstraint:
		return tether.Errorf(tether.ECONFLICT, "device %q already exists", d.ID)
	case foreignKeyConstraint:
		return tether.Errorf(tether.ENOTFOUND, "tenant %q not found", d.TenantID)
	}
	if err != nil {
		return fmt.Errorf("device %s: %w", d.ID, err)
	}
	for k, v := range d.Labels {
		if _, err := im.label.ExecContext(ctx, d.ID, d.TenantID, k, v); err != nil {
			return fmt.Errorf("device %s: label %q: %w", d.ID, k, err)
		}
	}
	return nil
}

// addCertificate registers a certificate by fingerprint alone. Without
// the certificate its subject is unknown and its validity period is
// checked from the certificate the device presents, so the stored period
// is the widest there is.
func (im *importer) addCertificate(ctx context.Context, c *tether.Certificate) error {
	if c.CreatedAt.IsZero() {
		c.CreatedAt = time.Now()
	}
	c.CreatedAt = c.CreatedAt.UTC()
	notBefore, notAfter := int64(0), int64(math.MaxInt64)
	if !c.NotBefore.IsZero() {
		notBefore = nanos(c.NotBefore)
	}
	if !c.NotAfter.IsZero() {
		notAfter = nanos(c.NotAfter)
	}
	c.NotBefore, c.NotAfter = fromNanos(notBefore), fromNanos(notAfter)
	_, err := im.cert.ExecContext(ctx, c.Fingerprint, c.TenantID, c.DeviceID, c.Subject, notBefore, notAfter, nanos(c.CreatedAt))
	if constraintOf(err) == uniqueConstraint {
		return tether.Errorf(tether.ECONFLICT, "certificate %s is registered already", c.Fingerprint)
	}
	if err != nil {
		return fmt.Errorf("certificate %s: %w", c.Fingerprint, err)
	}
	return nil
}

func insertImport(ctx context.Context, tx *sql.Tx, ds []*tether.Device, certs []*tether.Certificate) error {
	im, err := newImporter(ctx, tx)
	if err != nil {
		return err
	}
	defer im.close()
	for _, d := range ds {
		if err := im.insert(ctx, d); err != nil {
			return err
		}
	}
	for _, c := range certs {
		if err := im.addCertificate(ctx, c); err != nil {
			return err
		}
	}
	// A fingerprint revoked before is registered again on purpose, as
	// AddCertificate does.
	fps := make([]string, len(certs))
	for i, c := range certs {
		fps[i] = c.Fingerprint
	}
	for len(fps) > 0 {
		n := min(len(fps), inChunk)
		if _, err := tx.ExecContext(ctx, "DELETE FROM revoked_certificates WHERE fingerprint IN ("+
			strings.TrimSuffix(strings.Repeat("?, ", n), ", ")+")", anys(fps[:n])...); err != nil {
			return err
		}
		fps = fps[n:]
	}
	return nil
}

const provisioningKeyColumns = "id, tenant_id, profile_id, hash, max_uses, uses, expires_at, revoked_at, created_at"

func scanProvisioningKey(row interface{ Scan(...any) error }) (*tether.ProvisioningKey, error) {
	var (
		k                tether.ProvisioningKey
		expires, revoked sql.NullInt64
		created          int64
	)
	if err := row.Scan(&k.ID, &k.TenantID, &k.ProfileID, &k.Hash, &k.MaxUses, &k.Uses, &expires, &revoked, &created); err != nil {
		return nil, err
	}
	k.ExpiresAt, k.RevokedAt, k.CreatedAt = timePtr(expires), timePtr(revoked), fromNanos(created)
	return &k, nil
}

// CreateProvisioningKey stores a new provisioning key. A zero CreatedAt
// is the current time. It returns an ECONFLICT error if the ID is taken
// and an ENOTFOUND error if the tenant does not exist.
func (db *DB) CreateProvisioningKey(ctx context.Context, k *tether.ProvisioningKey) error {
	if k.CreatedAt.IsZero() {
		k.CreatedAt = time.Now()
	}
	k.CreatedAt = k.CreatedAt.UTC()
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error { return insertProvisioningKey(ctx, tx, k) })
	if err != nil {
		return fmt.Errorf("create provisioning key %s: %w", k.ID, err)
	}
	return nil
}

func insertProvisioningKey(ctx context.Context, tx *sql.Tx, k *tether.ProvisioningKey) error {
	_, err := tx.ExecContext(ctx, "INSERT INTO provisioning_keys ("+provisioningKeyColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
		k.ID, k.TenantID, k.ProfileID, k.Hash, k.MaxUses, k.Uses, nullNanos(k.ExpiresAt), nullNanos(k.RevokedAt), nanos(k.CreatedAt))
	switch constraintOf(err) {
	case uniqueConstraint:
		return tether.Errorf(tether.ECONFLICT, "provisioning key %q already exists", k.ID)
	case foreignKeyConstraint:
		return tether.Errorf(tether.ENOTFOUND, "tenant %q not found", k.TenantID)
	}
	return err
}

func provisioningKeyNotFound(id string) error {
	return tether.Errorf(tether.ENOTFOUND, "provisioning key %q not found", id)
}

// ProvisioningKey returns the provisioning key with the ID in whichever
// tenant it is (a device presenting it names no tenant), or an ENOTFOUND
// error.
func (db *DB) ProvisioningKey(ctx context.Context, id string) (*tether.ProvisioningKey, error) {
	return one(db.read.QueryRowContext(ctx,
		"SELECT "+provisioningKeyColumns+" FROM provisioning_keys WHERE id = ?", id), scanProvisioningKey,
		func() error { return provisioningKeyNotFound(id) }, "provisioning key %s", id)
}

// ProvisioningKeys returns a tenant's provisioning keys, revoked ones
// included, oldest first.
func (db *DB) ProvisioningKeys(ctx context.Context, tenantID string) ([]*tether.ProvisioningKey, error) {
	rows, err := db.read.QueryContext(ctx, "SELECT "+provisioningKeyColumns+
		" FROM provisioning_keys WHERE tenant_id = ? ORDER BY created_at, id", tenantID)
	if err != nil {
		return nil, fmt.Errorf("provisioning keys of %s: %w", tenantID, err)
	}
	keys, err := collect(rows, scanProvisioningKey)
	if err != nil {
		return nil, fmt.Errorf("provisioning keys of %s: %w", tenantID, err)
	}
	return keys, nil
}

// RevokeProvisioningKey marks a tenant's provisioning key revoked at now;
// a key revoked already keeps its first revocation time. It returns an
// ENOTFOUND error if the tenant has no such key.
func (db *DB) RevokeProvisioningKey(ctx context.Context, tenantID, id string, now time.Time) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE provisioning_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ? AND tenant_id = ?",
			nanos(now), id, tenantID)
		if err != nil {
			return err
		}
		if err := affected(res, func() error { return provisioningKeyNotFound(id) }); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("revoke provisioning key %s: %w", id, err)
	}
	return nil
}

// RotateProvisioningKey replaces a tenant's provisioning key by next in
// one transaction: the old key is revoked at now, and next (whose ID,
// Hash and CreatedAt the caller sets) gets the old key's profile, limits
// and count of uses, so that rotating does not reset how many devices the
// key may still register. It returns an ENOTFOUND error if the tenant has
// no such key and an ECONFLICT error if it is revoked already.
func (db *DB) RotateProvisioningKey(ctx context.Context, tenantID, id string, next *tether.ProvisioningKey, now time.Time) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		old, err := scanProvisioningKey(tx.QueryRowContext(ctx,
			"SELECT "+provisioningKeyColumns+" FROM provisioning_keys WHERE id = ? AND tenant_id = ?", id, tenantID))
		if errors.Is(err, sql.ErrNoRows) {
			return provisioningKeyNotFound(id)
		}
		if err != nil {
			return err
		}
		if old.RevokedAt != nil {
			return tether.Errorf(tether.ECONFLICT, "provisioning key %q is revoked; create a new one", id)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE provisioning_keys SET revoked_at = ? WHERE id = ?", nanos(now), id); err != nil {
			return err
		}
		next.TenantID, next.ProfileID, next.MaxUses, next.Uses, next.ExpiresAt, next.RevokedAt =
			old.TenantID, old.ProfileID, old.MaxUses, old.Uses, old.ExpiresAt, nil
		if next.CreatedAt.IsZero() {
			next.CreatedAt = now
		}
		next.CreatedAt = next.CreatedAt.UTC()
		return insertProvisioningKey(ctx, tx, next)
	})
	if err != nil {
		return fmt.Errorf("rotate provisioning key %s: %w", id, err)
	}
	return nil
}

// RegisterDevice creates a device with a provisioning key and counts the
// use, in one transaction: the device gets the key's tenant and profile.
// Keys are checked and counted on the one write connection, so a key
// good for n uses registers exactly n devices however many try at once.
// It returns an EUNAUTHORIZED error, storing nothing, if the key does not
// exist, is revoked, expired at or before now, is used up or its profile
// no longer exists (the message says which, for logs; callers should not
// pass it on), and an ECONFLICT error if the device ID is taken.
func (db *DB) RegisterDevice(ctx context.Context, keyID string, d *tether.Device, now time.Time) error {
	err := db.inWriteTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		k, err := scanProvisioningKey(tx.QueryRowContext(ctx,
			"SELECT "+provisioningKeyColumns+" FROM provisioning_keys WHERE id = ?", keyID))
		if errors.Is(err, sql.ErrNoRows) {
			return tether.Errorf(tether.EUNAUTHORIZED, "provisioning key %q does not exist", keyID)
		}
		if err != nil {
			return err
		}
		switch {
		case k.RevokedAt != nil:
			return tether.Errorf(tether.EUNAUTHORIZED, "provisioning key %q is revoked", keyID)
		case k.ExpiresAt != nil && !now.Before(*k.ExpiresAt):
			return tether.Errorf(tether.EUNAUTHORIZED, "provisioning key %q expired", keyID)
		case k.MaxUses > 0 && k.Uses >= k.MaxUses:
			return tether.Errorf(tether.EUNAUTHORIZED, "provisioning key %q is used up (%d uses)", keyID, k.Uses)
		}
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM profiles WHERE tenant_id = ? AND id = ?",
			k.TenantID, k.ProfileID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return tether.Errorf(tether.EUNAUTHORIZED, "the profile %q of provisioning key %q does not exist", k.ProfileID, keyID)
		}
		// The compare on uses keeps the count right on a database whose
		// transactions may interleave; here they cannot.
		res, err := tx.ExecContext(ctx, "UPDATE provisioning_keys SET uses = uses + 1 WHERE id = ? AND uses = ?", keyID, k.Uses)
		if err != nil {
			return err
		}
		if err := affected(res, func() error {
			return tether.Errorf(tether.ECONFLICT, "provisioning key %q was used meanwhile; try again", keyID)
		}); err != nil {
			return err
		}
		d.TenantID, d.ProfileID = k.TenantID, k.ProfileID
		im, err := newImporter(ctx, tx)
		if err != nil {
			return err
		}
		defer im.close()
		return im.insert(ctx, d)
	})
	if err != nil {
		return fmt.Errorf("register device %s: %w", d.ID, err)
	}
	return nil
}
