"""CL-FML (Cluster-based Label-aware Federated Meta-Learning): the pure math.

The pipeline (Aladwani et al.; ``shared/papers`` slides, DESIGN.md):

1. **Ring label dissemination** — each client passes its label set ℒ_i to
   its ring successor until no set grows (≤ N − 1 hops); everyone learns ℒ
   (:mod:`~dfml.algorithms.clfml.labels`: :func:`ring_dissemination`,
   :func:`merge_labels`).
2. **Label-aware clustering along an MST** — each client's label vector
   P_i (:func:`label_vector`) travels up a minimum spanning tree to the
   leader, which folds them into K cluster label distributions w_k as they
   arrive (:mod:`~dfml.algorithms.clfml.clustering`: :func:`convergecast_levels`,
   :class:`OnlineKMeans`; ``--clusters auto``: :func:`single_linkage`).
3. **Per-cluster meta-models** — decentralized meta-training within each
   cluster C_k on D^M (the existing meta-learning steps; no new math here).
4. **On-demand tasks** — a task 𝒯 with distribution q goes to
   k* = argmin_k ℋ(w_k, q); Case I (𝒯 ⊆ ℒ_k*) k* alone, Case II the fewest
   further clusters that cover 𝒯 (:mod:`~dfml.algorithms.clfml.tasks`).
5. **Missing-label augmentation** — a label-conditional VAE trained where a
   label is held generates samples of 𝒯 ∖ ℒ_k in cluster k, mixed up within
   each label (:mod:`~dfml.algorithms.clfml.augment`).
6. **Fine-tuning** — from the cluster meta-model on label-balanced query sets
   D^Q plus the augmented samples (the existing SGD steps; no new math here).

Nothing here knows about Ray or actors: functions take label sets, arrays and
tensors, and each is tested against an independent computation. Hellinger
distance ℋ(p, q) = (1/√2)‖√p − √q‖₂ lives in :mod:`labels`. Import from the
modules (this package imports nothing, so the label math loads without torch).
"""
