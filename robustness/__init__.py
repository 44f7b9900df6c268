"""Byzantine robustness that coexists with secure aggregation.

The gateway's API (updates are flat float32 deltas from the current global model):

    from ztfl.robustness.modes import make_aggregator, PrivacyConfigError

    agg = make_aggregator(privacy="grouped", defense="median", cohort_size=20, group_size=5)
    # raises PrivacyConfigError with the reason for an impossible combination,
    # e.g. privacy="secagg", defense="krum" (secagg hides the per-agent updates Krum needs)

    privacy="none":    res = agg.aggregate(updates, weights, agent_ids)
    privacy="grouped": groups = agg.split(agent_ids)           # random, every group >= group_size
                       # one secure aggregation per group -> sum of weight*update, total weight
                       res = agg.aggregate_groups(group_sums, group_weights, groups)
    privacy="secagg":  res = agg.aggregate_sum(cohort_sum, total_weight)

    res.aggregate   float32 delta to apply (zeros when the validation guard refused it)
    res.excluded    {input position: reason}; in grouped mode res.info["excluded_agents"]
    res.info        rule figures; "guard" (accepted, baseline, candidate), "drift_flagged"

Options (AggregatorConfig): defense in fedavg | krum | multi-krum | median | trimmed-mean |
geomed | flame | shap | shap-mad; expected_byzantine (Krum's f as a fraction); clip_norm
(client-side clipping, announced to agents); guard_margin with evaluate(delta) -> metric;
drift (cumulative drift tracking, privacy none only); attributions_of(delta) -> SHAP values
for the shap defences.

Modules: rules (the numpy rules), shap_stability, drift, attacks, modes (privacy modes,
validation, the aggregator). The experiments (`ztfl experiment byzantine | sweep`) are
bench.byzantine and bench.sweep, on the simulated federation of bench.simfed, which also runs
the secure aggregation of each group.
"""
