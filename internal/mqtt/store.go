package mqtt

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cockroachdb/pebble"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
)

// store keeps the broker's state across restarts in a Pebble database
// under Options.StoreDir: persistent sessions (the client, its
// subscriptions, its queued and in-flight QoS 1 and 2 messages) and
// retained messages. Writes do not wait for fsync (the same trade-off as
// JetStream's default: a process crash loses nothing the OS was given,
// a power cut can lose the last writes); Close flushes.
//
// It is a mochi storage hook written for Tether rather than mochi's own
// pebble hook, which leaks its iterators (Close then fails with "leaked
// iterators"), stores refused subscriptions as granted ones (a SUBACK
// 0x87 came back after a restart as a subscription of QoS 0x87), lets a
// taken-over connection overwrite its successor's record, never deletes an
// expired session's subscriptions and messages, forgets when a client
// disconnected (so expiry restarts at every restart), and writes for clean
// sessions that can never be restored. This one stores only persistent
// sessions: a clean session costs no write at all.
//
// Keys: c/<client> the client; s/<client>\x00<filter> a subscription;
// i/<client>\x00o<packet id> a message in flight to the client and
// i/<client>\x00i<packet id> the acknowledgement of one from it (client
// and server number their packets independently, so one id can be both);
// r/<topic> a retained message. Client IDs and topics cannot contain \x00
// (MQTT forbids it), so a session's keys are two ranges and one key.
//
// In-flight messages are stored with a sequence number and loaded in its
// order, which is the order mochi resends them in: messages queued for a
// client come back in the order they were published.
type store struct {
	mochi.HookBase
	srv       *mochi.Server
	db        *pebble.DB
	log       *slog.Logger
	maxExpiry uint32 // the server's longest session expiry, seconds
	now       func() time.Time
	// onRetained tells the retained index about a message loaded at start.
	onRetained func(topic, owner string)

	mu       sync.Mutex
	closed   bool
	sessions map[string]bool                   // client IDs whose session is stored
	inflight map[string]map[inflightRef]uint64 // stored in-flight messages by client: their sequence numbers
	seq      uint64                            // the sequence number of the last in-flight message stored
	restored map[string]int64                  // restored sessions not yet resumed: when each expires (unix s)
	loaded   struct {
		subs, inflight     int             // for the $SYS counters
		expiring, retained []storedMessage // loaded messages with an expiry, in flight and retained
	}
}

// storedClient is a client record with the time it disconnected, which
// mochi's record lacks: a restored session expires when it would have
// without the restart.
type storedClient struct {
	storage.Client
	Disconnected int64 `json:"disconnected,omitempty"` // unix s; 0 while connected
}

// storedMessage is a message record with what mochi's record lacks: its
// expiry, for a retained message the owner of the session that published
// it (see [owner]), for one in flight its place in the order.
type storedMessage struct {
	storage.Message
	Expiry          int64  `json:"expiry,omitempty"`
	ProtocolVersion byte   `json:"pv,omitempty"`
	Owner           string `json:"owner,omitempty"`
	Seq             uint64 `json:"seq,omitempty"`
}

// inflightRef names a message in flight within its session: the packet
// id and whose it is. mochi keeps the client's (the acknowledgement of a
// QoS 2 message the client sent, awaiting its PUBREL) apart from the
// server's (a message sent to the client), and tells them apart by the
// type of the packet it keeps: PUBACK, PUBREC and PUBCOMP are the
// server's answers to the client's messages.
type inflightRef struct {
	inbound bool
	id      uint16
}

func refOf(pk packets.Packet) inflightRef {
	t := pk.FixedHeader.Type
	return inflightRef{inbound: t == packets.Puback || t == packets.Pubrec || t == packets.Pubcomp, id: pk.PacketID}
}

func openStore(dir string, srv *mochi.Server, maxExpiry uint32, log *slog.Logger, onRetained func(topic, owner string)) (*store, error) {
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{log}})
	if err != nil {
		return nil, fmt.Errorf("mqtt store %s: %w", dir, err)
	}
	return &store{
		srv: srv, db: db, log: log, maxExpiry: maxExpiry, now: time.Now, onRetained: onRetained,
		sessions: map[string]bool{}, inflight: map[string]map[inflightRef]uint64{}, restored: map[string]int64{},
	}, nil
}

// ID names the hook.
func (s *store) ID() string { return "tether-store" }

// Provides reports the events the store handles.
func (s *store) Provides(b byte) bool {
	switch b {
	case mochi.OnSessionEstablished, mochi.OnDisconnect, mochi.OnSubscribed, mochi.OnUnsubscribed,
		mochi.OnRetainMessage, mochi.OnRetainedExpired, mochi.OnQosPublish, mochi.OnQosComplete,
		mochi.OnQosDropped, mochi.OnClientExpired, mochi.StoredClients, mochi.StoredSubscriptions,
		mochi.StoredInflightMessages, mochi.StoredRetainedMessages, mochi.StoredSysInfo:
		return true
	}
	return false
}

// Stop flushes the database to its files and closes it.
func (s *store) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	ferr := s.db.Flush()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("mqtt store close: %w", err)
	}
	if ferr != nil {
		return fmt.Errorf("mqtt store flush: %w", ferr)
	}
	return nil
}

func clientKey(id string) []byte { return []byte("c/" + id) }
func subKey(id, filter string) []byte {
	return []byte("s/" + id + "\x00" + filter)
}
func inflightKey(id string, ref inflightRef) []byte {
	dir := "o"
	if ref.inbound {
		dir = "i"
	}
	return []byte("i/" + id + "\x00" + dir + strconv.Itoa(int(ref.id)))
}
func retainedKey(topic string) []byte { return []byte("r/" + topic) }

// persistent reports whether a client's session outlives its connection.
func persistent(cl *mochi.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

// The helpers below are called with s.mu held.

func (s *store) set(key []byte, v any) {
	if s.closed {
		return
	}
	// JSON, as mochi's records are (their MarshalBinary would drop the
	// fields the records here add).
	b, err := json.Marshal(v)
	if err == nil {
		err = s.db.Set(key, b, pebble.NoSync)
	}
	if err != nil {
		s.log.Error("mqtt store write", "key", truncate(string(key)), "err", err)
	}
}

func (s *store) del(key []byte) {
	if s.closed {
		return
	}
	if err := s.db.Delete(key, pebble.NoSync); err != nil {
		s.log.Error("mqtt store delete", "key", truncate(string(key)), "err", err)
	}
}

// dropSession deletes everything stored for a client ID.
func (s *store) dropSession(id string) {
	delete(s.sessions, id)
	delete(s.inflight, id)
	delete(s.restored, id)
	if s.closed {
		return
	}
	b := s.db.NewBatch()
	_ = b.Delete(clientKey(id), nil)
	_ = b.DeleteRange([]byte("s/"+id+"\x00"), []byte("s/"+id+"\x01"), nil)
	_ = b.DeleteRange([]byte("i/"+id+"\x00"), []byte("i/"+id+"\x01"), nil)
	if err := b.Commit(pebble.NoSync); err != nil {
		s.log.Error("mqtt store delete session", "client", truncate(id), "err", err)
	}
}

func (s *store) putClient(cl *mochi.Client, disconnected int64) {
	p := cl.Properties.Props
	s.set(clientKey(cl.ID), storedClient{
		Client: storage.Client{
			ID: cl.ID, T: storage.ClientKey, Remote: cl.Net.Remote, Listener: cl.Net.Listener,
			Username: cl.Properties.Username, Clean: cl.Properties.Clean, ProtocolVersion: cl.Properties.ProtocolVersion,
			Properties: storage.ClientProperties{
				SessionExpiryInterval: p.SessionExpiryInterval, SessionExpiryIntervalFlag: p.SessionExpiryIntervalFlag,
				RequestProblemInfo: p.RequestProblemInfo, RequestProblemInfoFlag: p.RequestProblemInfoFlag,
				RequestResponseInfo: p.RequestResponseInfo, ReceiveMaximum: p.ReceiveMaximum,
				TopicAliasMaximum: p.TopicAliasMaximum, MaximumPacketSize: p.MaximumPacketSize,
			},
			// The will is not kept: a restored session has no connection
			// whose loss could send it.
		},
		Disconnected: disconnected,
	})
}

func (s *store) putSub(id string, sub packets.Subscription, qos byte) {
	s.set(subKey(id, sub.Filter), storage.Subscription{
		T: storage.SubscriptionKey, Client: id, Filter: sub.Filter, Qos: qos, Identifier: sub.Identifier,
		NoLocal: sub.NoLocal, RetainHandling: sub.RetainHandling, RetainAsPublished: sub.RetainAsPublished,
	})
}

func message(pk packets.Packet) storedMessage {
	p := pk.Properties
	return storedMessage{
		Message: storage.Message{
			FixedHeader: pk.FixedHeader, TopicName: pk.TopicName, Payload: pk.Payload, Origin: pk.Origin,
			Created: pk.Created, PacketID: pk.PacketID,
			Properties: storage.MessageProperties{
				PayloadFormat: p.PayloadFormat, PayloadFormatFlag: p.PayloadFormatFlag,
				MessageExpiryInterval: p.MessageExpiryInterval, ContentType: p.ContentType,
				ResponseTopic: p.ResponseTopic, CorrelationData: p.CorrelationData,
				SubscriptionIdentifier: p.SubscriptionIdentifier, TopicAlias: p.TopicAlias, User: p.User,
			},
		},
		Expiry: pk.Expiry, ProtocolVersion: pk.ProtocolVersion,
	}
}

// putInflight stores a message in flight. One stored before (mochi
// stores it again when it resends it) keeps its place in the order.
func (s *store) putInflight(id string, pk packets.Packet) {
	ref := refOf(pk)
	refs := s.inflight[id]
	if refs == nil {
		refs = map[inflightRef]uint64{}
		s.inflight[id] = refs
	}
	seq, ok := refs[ref]
	if !ok {
		s.seq++
		seq = s.seq
		refs[ref] = seq
	}
	m := message(pk)
	m.T, m.Client, m.Seq = storage.InflightKey, id, seq
	s.set(inflightKey(id, ref), m)
}

// OnSessionEstablished stores a persistent session as it starts, with
// whatever it inherited; a clean session replacing a stored one deletes it.
func (s *store) OnSessionEstablished(cl *mochi.Client, _ packets.Packet) {
	if cl.Net.Inline {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.restored, cl.ID)
	if !persistent(cl) {
		if s.sessions[cl.ID] {
			s.dropSession(cl.ID)
		}
		return
	}
	wasStored := s.sessions[cl.ID]
	s.sessions[cl.ID] = true
	s.putClient(cl, 0)
	if !wasStored {
		// A 5.0 session that had no expiry and is resumed with one
		// inherits subscriptions and messages that were never stored.
		for _, sub := range cl.State.Subscriptions.GetAll() {
			s.putSub(cl.ID, sub, sub.Qos)
		}
		for _, pk := range cl.State.Inflight.GetAll(false) {
			s.putInflight(cl.ID, pk)
		}
	}
}

// OnDisconnect records when a persistent session's connection ended, or
// deletes the session if it ends with the connection.
func (s *store) OnDisconnect(cl *mochi.Client, _ error, expire bool) {
	// A client without a socket is one mochi restores from this store at
	// start (it calls this for each); one taken over lives on in its
	// successor, whose record this must not overwrite.
	if cl.Net.Inline || cl.Net.Conn == nil || cl.IsTakenOver() || errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.sessions[cl.ID] {
		return
	}
	if expire {
		s.dropSession(cl.ID)
		return
	}
	s.putClient(cl, s.now().Unix())
}

// OnSubscribed stores the granted subscriptions of a persistent session.
func (s *store) OnSubscribed(cl *mochi.Client, pk packets.Packet, codes []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.sessions[cl.ID] {
		return
	}
	for i, sub := range pk.Filters {
		if i < len(codes) && codes[i] < packets.ErrUnspecifiedError.Code {
			s.putSub(cl.ID, sub, codes[i])
		}
	}
}

// OnUnsubscribed deletes subscriptions.
func (s *store) OnUnsubscribed(cl *mochi.Client, pk packets.Packet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.sessions[cl.ID] {
		return
	}
	for _, sub := range pk.Filters {
		s.del(subKey(cl.ID, sub.Filter))
	}
}

// OnRetainMessage stores a retained message, or deletes it when the
// payload is empty.
func (s *store) OnRetainMessage(cl *mochi.Client, pk packets.Packet, _ int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(pk.Payload) == 0 {
		s.del(retainedKey(pk.TopicName))
		return
	}
	m := message(pk)
	m.T, m.PacketID = storage.RetainedKey, 0
	m.FixedHeader.Retain = true
	m.Owner = string(cl.Properties.Username)
	s.set(retainedKey(pk.TopicName), m)
}

// OnRetainedExpired deletes an expired retained message.
func (s *store) OnRetainedExpired(topic string) { s.deleteRetained(topic) }

func (s *store) deleteRetained(topic string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.del(retainedKey(topic))
}

// OnQosPublish stores a message in flight to or from a persistent
// session. The PUBACK of a QoS 1 message from the client is not stored:
// the broker sends it and forgets it at once.
func (s *store) OnQosPublish(cl *mochi.Client, pk packets.Packet, _ int64, _ int) {
	if pk.FixedHeader.Type == packets.Puback || pk.FixedHeader.Type == packets.Pubcomp {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.sessions[cl.ID] {
		return
	}
	s.putInflight(cl.ID, pk)
}

// OnQosComplete deletes a message whose exchange is over; the broker
// passes the packet it kept in flight.
func (s *store) OnQosComplete(cl *mochi.Client, pk packets.Packet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ref := refOf(pk)
	refs := s.inflight[cl.ID]
	if _, ok := refs[ref]; !ok {
		return
	}
	delete(refs, ref)
	if len(refs) == 0 {
		delete(s.inflight, cl.ID)
	}
	s.del(inflightKey(cl.ID, ref))
}

// OnQosDropped deletes a message that expired or was abandoned.
func (s *store) OnQosDropped(cl *mochi.Client, pk packets.Packet) { s.OnQosComplete(cl, pk) }

// OnClientExpired deletes an expired session.
func (s *store) OnClientExpired(cl *mochi.Client) { s.forget(cl.ID) }

// forget deletes everything stored for a client ID.
func (s *store) forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropSession(id)
}

// expiry returns how long a stored session outlives its connection.
func (s *store) expiry(c storage.Client) int64 {
	e := s.maxExpiry
	if c.ProtocolVersion == 5 && c.Properties.SessionExpiryIntervalFlag && c.Properties.SessionExpiryInterval < e {
		e = c.Properties.SessionExpiryInterval
	}
	return int64(e)
}

// scan calls fn with every value under a key prefix.
func (s *store) scan(prefix string, fn func(key, value []byte) error) error {
	// Prefixes are "x/"; "x0" is the first key after them.
	upper := prefix[:len(prefix)-1] + "0"
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte(prefix), UpperBound: []byte(upper)})
	if err != nil {
		return fmt.Errorf("mqtt store scan %s: %w", prefix, err)
	}
	for it.First(); it.Valid(); it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			_ = it.Close()
			return err
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("mqtt store scan %s: %w", prefix, err)
	}
	return nil
}

// StoredClients returns the persistent sessions that have not expired,
// deleting those that have.
func (s *store) StoredClients() ([]storage.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().Unix()
	var out []storage.Client
	var expired []string
	err := s.scan("c/", func(_, v []byte) error {
		var c storedClient
		if err := json.Unmarshal(v, &c); err != nil {
			return fmt.Errorf("mqtt store: client record: %w", err)
		}
		since := c.Disconnected
		if since == 0 {
			since = now // connected when the process stopped
		}
		if since+s.expiry(c.Client) < now {
			expired = append(expired, c.ID)
			return nil
		}
		s.sessions[c.ID] = true
		s.restored[c.ID] = since + s.expiry(c.Client)
		out = append(out, c.Client)
		return nil
	})
	for _, id := range expired {
		s.dropSession(id)
	}
	if len(expired) > 0 {
		s.log.Info("mqtt sessions expired while the gateway was down", "sessions", len(expired))
	}
	return out, err
}

// StoredSubscriptions returns the subscriptions of the restored sessions,
// deleting any left by a session that is gone.
func (s *store) StoredSubscriptions() ([]storage.Subscription, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []storage.Subscription
	var orphans [][]byte
	err := s.scan("s/", func(k, v []byte) error {
		var sub storage.Subscription
		if err := json.Unmarshal(v, &sub); err != nil {
			return fmt.Errorf("mqtt store: subscription record: %w", err)
		}
		if !s.sessions[sub.Client] {
			orphans = append(orphans, append([]byte(nil), k...))
			return nil
		}
		out = append(out, sub)
		return nil
	})
	for _, k := range orphans {
		s.del(k)
	}
	s.loaded.subs = len(out)
	return out, err
}

// StoredInflightMessages returns the messages in flight of the restored
// sessions in the order they were stored, deleting any left by a session
// that is gone. Records from before in-flight keys said whose the packet
// id is, and before they had a sequence number, are stored again under
// their new key, before the others, in the order of their creation.
func (s *store) StoredInflightMessages() ([]storage.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	type loaded struct {
		key []byte
		m   storedMessage
	}
	var found []loaded
	var orphans [][]byte
	err := s.scan("i/", func(k, v []byte) error {
		var m storedMessage
		if err := json.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("mqtt store: message record: %w", err)
		}
		if !s.sessions[m.Client] {
			orphans = append(orphans, append([]byte(nil), k...))
			return nil
		}
		found = append(found, loaded{append([]byte(nil), k...), m})
		s.seq = max(s.seq, m.Seq)
		return nil
	})
	for _, k := range orphans {
		s.del(k)
	}
	// Old records, all of sequence 0, come first, by creation.
	slices.SortStableFunc(found, func(a, b loaded) int {
		return cmp.Or(cmp.Compare(a.m.Seq, b.m.Seq), cmp.Compare(a.m.Created, b.m.Created))
	})
	out := make([]storage.Message, 0, len(found))
	for _, f := range found {
		m := f.m
		ref := refOf(m.ToPacket())
		refs := s.inflight[m.Client]
		if refs == nil {
			refs = map[inflightRef]uint64{}
			s.inflight[m.Client] = refs
		}
		if m.Seq == 0 || string(f.key) != string(inflightKey(m.Client, ref)) {
			s.del(f.key)
			if m.Seq == 0 {
				s.seq++
				m.Seq = s.seq
			}
			s.set(inflightKey(m.Client, ref), m)
		}
		refs[ref] = m.Seq
		if m.Expiry > 0 {
			s.loaded.expiring = append(s.loaded.expiring, m)
		}
		out = append(out, m.Message)
	}
	s.loaded.inflight = len(out)
	return out, err
}

// StoredRetainedMessages returns the retained messages and tells the
// retained index whose they are.
func (s *store) StoredRetainedMessages() ([]storage.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []storage.Message
	err := s.scan("r/", func(_, v []byte) error {
		var m storedMessage
		if err := json.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("mqtt store: retained record: %w", err)
		}
		if s.onRetained != nil {
			s.onRetained(m.TopicName, m.Owner)
		}
		if m.Expiry > 0 {
			s.loaded.retained = append(s.loaded.retained, m)
		}
		out = append(out, m.Message)
		return nil
	})
	return out, err
}

// StoredSysInfo is the last thing mochi asks a store for at start, after
// it has loaded everything else and before it accepts a connection: the
// store uses the moment to give loaded messages back the expiry that
// mochi's records drop, and returns the counters mochi's $SYS topics would
// otherwise start from zero (and then count below it).
func (s *store) StoredSysInfo() (storage.SystemInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.loaded.retained {
		if pk, ok := s.srv.Topics.Retained.Get(m.TopicName); ok {
			pk.Expiry, pk.ProtocolVersion = m.Expiry, m.ProtocolVersion
			s.srv.Topics.Retained.Add(m.TopicName, pk)
		}
	}
	for _, m := range s.loaded.expiring {
		if cl, ok := s.srv.Clients.Get(m.Client); ok {
			get := cl.State.Inflight.Get
			if refOf(m.ToPacket()).inbound {
				get = cl.State.Inflight.GetInbound
			}
			if pk, ok := get(m.PacketID); ok {
				pk.Expiry, pk.ProtocolVersion = m.Expiry, m.ProtocolVersion
				cl.State.Inflight.Set(pk) // an update: keeps its place
			}
		}
	}
	s.loaded.retained, s.loaded.expiring = nil, nil
	var info storage.SystemInfo
	info.Version = mochi.Version
	info.Retained = int64(s.srv.Topics.Retained.Len())
	info.Subscriptions = int64(s.loaded.subs)
	info.Inflight = int64(s.loaded.inflight)
	return info, nil
}

// expiredRestored returns the restored sessions, not resumed since, whose
// expiry has passed, and forgets them.
func (s *store) expiredRestored(now int64) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, at := range s.restored {
		if at < now {
			ids = append(ids, id)
			delete(s.restored, id)
		}
	}
	return ids
}

// pebbleLogger sends Pebble's own messages to the gateway's log.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug("mqtt store: " + fmt.Sprintf(format, args...))
}

// Fatalf logs and panics: Pebble calls it for corruption it cannot go on
// from, and expects it not to return.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error("mqtt store: " + msg)
	panic("mqtt store: " + msg)
}
