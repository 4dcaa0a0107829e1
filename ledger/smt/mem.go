package smt

// MemStore is a Store in memory.
type MemStore map[string]*Node

// Get returns the node at p, or nil.
func (m MemStore) Get(p Position) (*Node, error) { return m[string(p.Bytes())], nil }

// Put stores n at p, or removes the node at p when n is nil.
func (m MemStore) Put(p Position, n *Node) error {
	if n == nil {
		delete(m, string(p.Bytes()))
	} else {
		m[string(p.Bytes())] = n
	}
	return nil
}
