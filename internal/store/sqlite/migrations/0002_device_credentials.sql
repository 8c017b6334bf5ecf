-- 0002: device credentials beyond the token: X.509 client certificates
-- (registered by fingerprint, or issued by a CA the tenant trusts) and the
-- nonce of a device's DTLS pre-shared key (the key itself is derived from
-- it and a node secret, so it is never stored).

ALTER TABLE devices ADD COLUMN psk_nonce INTEGER NOT NULL DEFAULT 0;

CREATE TABLE device_certificates (
	fingerprint TEXT PRIMARY KEY,
	tenant_id   TEXT NOT NULL,
	device_id   TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
	subject     TEXT NOT NULL,
	not_before  INTEGER NOT NULL,
	not_after   INTEGER NOT NULL,
	created_at  INTEGER NOT NULL
);

CREATE INDEX device_certificates_device ON device_certificates (device_id);

-- A certificate deleted from its device is revoked: it is refused by
-- fingerprint even when a trusted CA signed it.
CREATE TABLE revoked_certificates (
	fingerprint TEXT PRIMARY KEY,
	tenant_id   TEXT NOT NULL,
	device_id   TEXT NOT NULL,
	revoked_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE device_cas (
	tenant_id  TEXT NOT NULL REFERENCES tenants (id),
	id         TEXT NOT NULL,
	subject    TEXT NOT NULL,
	not_after  INTEGER NOT NULL,
	pem        TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (tenant_id, id)
) WITHOUT ROWID;
