package store

import "errors"

var (
	// ErrHeaderMismatch: the store was created with another tokenizer,
	// sequence length, packing mode or format; writing to it would mix
	// incompatible sequences.
	ErrHeaderMismatch = errors.New("store header mismatch")
	// ErrLocked: another process has the store open.
	ErrLocked = errors.New("store is in use by another process")
	// ErrNotFound: no such sequence, document or state.
	ErrNotFound = errors.New("not found in store")
	// ErrEmpty: a reader was asked for data from a store with no sequences.
	ErrEmpty = errors.New("store holds no sequences")
	// ErrCaughtUp: a following reader has read every committed sequence.
	ErrCaughtUp = errors.New("reader has caught up with the store")
	// ErrNoStore: the directory holds no emopipe store.
	ErrNoStore = errors.New("no emopipe store")
	// ErrDiskFull: the store's file system has less free space than
	// Options.MinFree; nothing was written.
	ErrDiskFull = errors.New("disk almost full")
)
