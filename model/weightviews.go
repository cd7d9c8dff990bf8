package model

import (
	"sync"

	. "github.com/gomlx/gomlx/core/graph"
)

// Weight views: the identity nodes that carry a weight's custom gradient
// (linear, mergedGrad), by the weight node they pass through.
//
// Why a trainer wants them: on the go backend an identity op copies its
// input unless the graph owns that buffer and this is its last use. A
// weight fed to the graph without being donated is copied by its identity
// every step (for the small preset, every weight: 227 MB a step). A
// trainer that updates the weights outside the graph (train's host
// AdamW) donates each weight and takes the view back as the weight's new
// value. The identity is then the weight buffer's only reader and passes
// it through, and the same memory comes back as the variable's value.
//
// Recording is on for a graph only while Forward builds it with
// Options.WeightViews, so graphs built otherwise leave nothing behind.
var weightViews = struct {
	sync.Mutex
	byGraph map[*Graph]map[*Node]*Node
}{byGraph: map[*Graph]map[*Node]*Node{}}

// weightHook is IdentityWithCustomGradient(w, grad), recorded as w's view
// when the graph records views and w is a graph parameter (a variable
// fed in; the shared expert's slice, say, is not). Only a weight's first
// view is recorded: a second identity on the same weight (the head's row
// groups) is a second reader, and copies.
func weightHook(w *Node, grad func(x, v *Node) *Node) *Node {
	n := IdentityWithCustomGradient(w, grad)
	if w.Type() != NodeTypeParameter {
		return n
	}
	weightViews.Lock()
	defer weightViews.Unlock()
	if views := weightViews.byGraph[w.Graph()]; views != nil && views[w] == nil {
		views[w] = n
	}
	return n
}

func beginWeightViews(g *Graph) {
	weightViews.Lock()
	defer weightViews.Unlock()
	weightViews.byGraph[g] = map[*Node]*Node{}
}

func endWeightViews(g *Graph) map[*Node]*Node {
	weightViews.Lock()
	defer weightViews.Unlock()
	views := weightViews.byGraph[g]
	delete(weightViews.byGraph, g)
	return views
}
