"""Rows derived from other rows' meta after evaluation: no model or data is touched again."""

from __future__ import annotations

from ebmbench.results import MetricValue

FORWARD_KL_DEFINITION = ("KL(p_data || q) = held-out NLL - H(p) (Theis et al. 2016), paired: the mean over the "
                         "likelihood row's test points of log p_data(x) - log q(x), stderr from the differences")


def forward_kl_name(likelihood_metric: str) -> str:
    """The derived row's name: ``forward_kl_<estimator>`` (nll_pf_ode -> forward_kl_pf_ode), one per estimator."""
    return "forward_kl_" + likelihood_metric.removeprefix("nll_")


def forward_kl_values(values: list[MetricValue]) -> list[MetricValue]:
    """One ``forward_kl_<estimator>`` row per ok likelihood row whose meta carries the paired forward KL
    (Theis et al. 2016); one name per estimator, so a run's rows stay unique by (sampler, metric)."""
    return [
        MetricValue(forward_kl_name(v.metric), v.meta["forward_kl"], v.meta.get("forward_kl_stderr"),
                    n_samples=v.meta.get("n"),
                    meta={"from_metric": v.metric, "likelihood_kind": v.meta.get("forward_kl_kind"),
                          "n": v.meta.get("n"), "units": "nats", "definition": FORWARD_KL_DEFINITION,
                          "eval_s": 0.0})  # computed inside the likelihood row, whose eval_s includes it
        for v in values if v.status == "ok" and v.meta.get("forward_kl") is not None
    ]
