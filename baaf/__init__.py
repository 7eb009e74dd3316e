"""Bootstrap Aggregation Anomaly Filtering (BAAF) and the experiment runner.

Glossary used across the suite:

bag
    One of ``n`` disjoint random subsets of the training groups drawn in a vote.
vote
    One bag split with its ``n`` bag models; ``K`` votes use ``K`` splits.
out-of-bag score
    Image score given by a bag model to a training image outside its bag.
filter score
    Out-of-bag score after min-max normalisation to [0, 1].
threshold
    Crossing of the two weighted Gaussian densities fitted to one bag's filter
    scores; a filter score above it counts as anomalous.
flagged
    A sample is flagged in a vote when a strict majority of the ``n - 1``
    models that did not train on it score it above its bag's threshold.
removed
    Flagged in at least half of the votes; the final model trains on the rest.
embedding, memory bank, coreset
    One patch feature vector; the (M, D) array a patch detector keeps; the
    subset of training embeddings chosen by greedy k-centre.
anomaly map, image score
    Per-pixel (H, W) and per-image anomaly scores, higher is more anomalous.
image_auroc, pixel_auroc, pixel_aupro, filter_precision, filter_recall
    Metric keys, identical in code, ``metrics.json``, CSV files and W&B.
"""
