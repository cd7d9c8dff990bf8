// Package train pretrains EMO mixture-of-experts models (package model)
// from a packed store (package packing/store).
//
// Key types:
//
//   - Config (with OptimConfig): the run — model, batch, accumulation,
//     AdamW with decay exemptions, global-norm clipping, cosine schedule,
//     global or local load balancing, router/attention segmentation, seeds,
//     backend, evaluation, checkpointing, reporting.
//   - Trainer: New / NewWithStore resume the run a store holds (or start
//     one), Step takes one optimizer step, Checkpoint makes it durable,
//     Evaluate measures held-out loss, Run loops to Config.Steps.
//   - Dataset and Batch: store sequences → inputs, shifted labels, router
//     segments from spans (default) or EOS as the reference, attention
//     documents, domains.
//   - Model and Inference (experts.go): a checkpoint loaded for inference
//     (LoadModel; checkpoints carry their model config), expert selection
//     from calibration text (Inference.Select), held-out loss per domain
//     with an expert subset (Inference.Eval), pruning to a smaller
//     checkpoint (Model.Prune, Model.Save), Compare (compare.go) and
//     Modularity / WriteModularity (modularity.go). docs/selective-experts.md.
//
// One step: Batch sequences from the store cursor in Accum micro-batches;
// with global load balancing and Accum > 1 a forward-only pass per
// micro-batch collects expert counts, summed and fed to every micro-batch
// (model.Inputs.LBCounts); each micro-batch's gradient (its losses weighted
// by its share of the step's tokens) is accumulated; the last one clips the
// summed gradient by global norm and applies AdamW in the same graph. EMO
// pool sizes come from PCG(seed, step), data order from the store cursor,
// initialisation from GoMLX's RNG seeded with Config.Seed: the same store
// and seed give the same losses bit for bit, and a resumed run continues
// them exactly.
//
// State: checkpoints are safetensors files under <store>/checkpoints
// (written to a temporary file, fsynced, renamed); one store transaction
// then records step, data cursor, checkpoint name + sha256, the run's
// settings and the loss history (State, History). The last two checkpoints
// are kept. Metrics go to <store>/train/metrics.jsonl, a MetricsSink and a
// progress line; WritePlots draws loss.png and expert_load.png.
//
// docs/train.md describes the loop, the state layout, the resume
// guarantees and measured speeds.
package train
