package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/dgraph-io/badger/v4"
	bpb "github.com/dgraph-io/badger/v4/pb"
	pb "github.com/gpuledger/gpuledger/proto/gpuledger/v1"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/proto"
)

// Backup is a consistent read of the whole store, to be written out in
// badger's backup format (what badger's DB.Load reads). It holds the store as
// it was when BeginBackup was called — whole batches only, up to the
// replication index recorded with the last — however many batches Apply adds
// while it is written. Close it when done.
type Backup struct {
	txn *badger.Txn
}

// BeginBackup starts a backup of the store as it is now.
func (l *Ledger) BeginBackup() *Backup { return &Backup{txn: l.db.NewTransaction(false)} }

// WriteTo writes the backup: frames of uint64le(length) and a badger
// KVList of up to 1,000 keys, as badger's own Backup writes them. (badger's
// Stream reads each key range in a transaction of its own, so a stream taken
// while Apply runs can mix batches; one iterator in one transaction cannot.)
func (b *Backup) WriteTo(w io.Writer) (int64, error) {
	it := b.txn.NewIterator(badger.DefaultIteratorOptions)
	defer it.Close()
	var n int64
	list := &bpb.KVList{}
	flush := func() error {
		if len(list.Kv) == 0 {
			return nil
		}
		buf, err := proto.Marshal(list)
		if err != nil {
			return err
		}
		frame := binary.LittleEndian.AppendUint64(nil, uint64(len(buf)))
		k, err := w.Write(append(frame, buf...))
		n += int64(k)
		list.Kv = list.Kv[:0]
		return err
	}
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		v, err := item.ValueCopy(nil)
		if err != nil {
			return n, fmt.Errorf("back up store: %w", err)
		}
		list.Kv = append(list.Kv, &bpb.KV{Key: item.KeyCopy(nil), Value: v, UserMeta: []byte{item.UserMeta()}, Version: item.Version()})
		if len(list.Kv) == 1000 {
			if err := flush(); err != nil {
				return n, fmt.Errorf("back up store: %w", err)
			}
		}
	}
	if err := flush(); err != nil {
		return n, fmt.Errorf("back up store: %w", err)
	}
	return n, nil
}

// Close ends the backup's read.
func (b *Backup) Close() { b.txn.Discard() }

// Restore replaces the store's contents with a backup written by a Backup on
// a node of the same ledger, and reports the size it had before. The backup
// must be of the same genesis, must extend what this store held (the old
// root is the tree hash of the backup's first old-size entries), and must
// pass CheckStore; otherwise Restore returns an error and the store holds
// whatever the backup held, so the caller must stop serving it.
// Reads must not run during Restore.
func (l *Ledger) Restore(ctx context.Context, r io.Reader) (oldSize uint64, err error) {
	l.applyMu.Lock()
	defer l.applyMu.Unlock()
	old := l.view.Load()
	l.mapMu.Lock()
	l.mapCache, l.mapJournaled = make(mapCache), 0 // the store is replaced: the map's top levels too (load recovers them)
	l.mapMu.Unlock()
	if err := l.db.DropAll(); err != nil {
		return old.size, fmt.Errorf("restore: clear store: %w", err)
	}
	if err := l.db.Load(r, 256); err != nil {
		return old.size, fmt.Errorf("restore: load backup: %w", err)
	}
	genesis := l.genesis
	l.cfg.Genesis = genesis // load insists the restored genesis is this ledger's
	if err := l.load(ctx); err != nil {
		return old.size, fmt.Errorf("restore: %w", err)
	}
	l.cpMu.Lock()
	l.cp = nil
	l.cpMu.Unlock()
	v := l.view.Load()
	if v.size < old.size {
		return old.size, fmt.Errorf("restore: the backup holds %d entries, fewer than the %d this store held", v.size, old.size)
	}
	if h, err := l.TreeHash(ctx, old.size); err != nil || h != old.root {
		return old.size, fmt.Errorf("restore: the backup does not extend this store: its tree of %d entries hashes to %x, this store's was %x", old.size, h, old.root)
	}
	if err := l.CheckStore(ctx, nil); err != nil {
		return old.size, fmt.Errorf("restore: %w", err)
	}
	return old.size, nil
}

// SignCheckpointAt signs a checkpoint of the first size entries of the log
// with this node's key: a cosignature of a tree this node has applied.
// Every node of a ledger signs the same body for the same size.
func (l *Ledger) SignCheckpointAt(ctx context.Context, size uint64) (*pb.Checkpoint, error) {
	if l.cfg.NodeSigner == nil {
		return nil, ErrNoSigner
	}
	root, err := l.TreeHash(ctx, size)
	if err != nil {
		return nil, err
	}
	body := CheckpointBody(l.origin, size, root)
	var mapRoot []byte
	if m, err := l.MapRoot(size); err == nil {
		if m, err = l.signedMapRoot(m); err != nil {
			return nil, err
		}
		body, mapRoot = CheckpointBodyMap(l.origin, size, root, m), bytes.Clone(m[:])
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	msg, err := note.Sign(&note.Note{Text: body}, l.cfg.NodeSigner)
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	return &pb.Checkpoint{Note: string(msg), Origin: l.origin, Size: size, RootHash: bytes.Clone(root[:]), MapRoot: mapRoot}, nil
}
