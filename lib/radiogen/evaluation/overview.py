"""One-page overview of what a run achieved: the first page of the report.

It gathers, beside the paper's number where the paper gives one,

* the judge: accuracy of the FIRST morphology classifier on the real FIRST
  test split (paper Sect. 6.3: 81.5%), with its 1-sigma Wilson score interval;
* class conditioning: the same accuracy on the generated FIRST sets, one row
  per guidance (paper Sect. 6.3: 83.4% on the set generated at the best
  guidance, 0.75; the other values of its Table 7 are not in the paper's text),
  with McNemar's test against the main guidance where the sets share latents;
* fidelity: the size-matched ratios ``generated_over_floor`` of the image mean
  and std distances (W1 and KS), each with its z-score and the sizes it was
  measured at (the floor shrinks as ``1/sqrt(m)``, so a ratio means little
  without m), and the KID with its z, per dataset, from the summary tables of
  :mod:`radiogen.evaluation.summary` (the paper shows these distributions only
  as histograms, so it gives no numbers);
* beyond the paper, when the run makes them: size conditioning (Spearman rho
  of measured vs requested size, generated against real) and the simulated
  map's recovery by PyBDSF (completeness, reliability, flux ratio).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from radiogen.errors import InputFileError
from radiogen.evaluation.summary import write_table_html

__all__ = [
    "PAPER_REAL_TEST_ACCURACY",
    "PAPER_GENERATED_ACCURACY",
    "NOT_GIVEN",
    "OVERVIEW_COLUMNS",
    "overview_table",
    "write_overview_html",
]

#: Classifier accuracy on the real FIRST test split, percent (paper Sect. 6.3).
PAPER_REAL_TEST_ACCURACY = 81.5
#: Accuracy on generated FIRST sets per guidance, percent (paper Sect. 6.3 text;
#: Table 7's other rows are not given in the text).
PAPER_GENERATED_ACCURACY = {0.75: 83.4}
NOT_GIVEN = "not given"

#: ``interval_low``/``interval_high``: 1-sigma Wilson interval of an accuracy; ``z``: (generated -
#: floor) / floor spread of a distance; ``n``: the sizes a number was measured at (text).
OVERVIEW_COLUMNS = ["section", "dataset", "quantity", "value", "uncertainty", "interval_low", "interval_high", "z", "n",
                    "paper", "reading"]

#: (distribution key, metric) of the summary rows shown, in order.
_FIDELITY_ROWS = [("image_mean", "W1"), ("image_mean", "KS"), ("image_std", "W1"), ("image_std", "KS")]


def _paired_reading(row, main_guidance: float) -> str:
    """McNemar's comparison with the main guidance, as words (empty where there is none)."""
    if "paired_with_main" not in row.index or not isinstance(row["paired_with_main"], str):
        return ""
    if row["paired_with_main"] != "yes":
        return f"; not paired with guidance {main_guidance:g} ({row['paired_with_main']})"
    return (f"; vs guidance {main_guidance:g} on the same latents: {int(row['pairs_right_only_here'])} images right "
            f"only here, {int(row['pairs_right_only_at_main'])} only there, McNemar exact p = "
            f"{float(row['mcnemar_p_exact']):.3g} (mid-p {float(row['mcnemar_p_mid']):.3g})")


def _accuracy_rows(accuracy: pd.DataFrame, *, main_guidance: float) -> list[dict]:
    needed = ["set", "guidance", "n_images", "accuracy_percent", "accuracy_low_percent", "accuracy_high_percent"]
    missing = [c for c in needed if c not in accuracy.columns]
    if missing:
        raise InputFileError(f"accuracy table lacks column(s) {', '.join(missing)}")
    rows = []
    for _, row in accuracy.iterrows():
        n = int(row["n_images"])
        common = {
            "value": float(row["accuracy_percent"]),
            "uncertainty": np.nan,
            "interval_low": float(row["accuracy_low_percent"]),
            "interval_high": float(row["accuracy_high_percent"]),
            "z": np.nan,
            "n": str(n),
        }
        guidance = float(row["guidance"])
        if not np.isfinite(guidance):
            rows.append({
                "section": "judge",
                "dataset": "first",
                "quantity": "classifier accuracy on the real FIRST test split (%)",
                **common,
                "paper": f"{PAPER_REAL_TEST_ACCURACY:g}",
                "reading": f"1-sigma Wilson interval; n = {n} test images",
            })
            continue
        paper = next((v for w, v in PAPER_GENERATED_ACCURACY.items() if np.isclose(w, guidance)), None)
        main = " (the set of the summary tables)" if np.isclose(guidance, main_guidance) else ""
        rows.append({
            "section": "class conditioning",
            "dataset": "first",
            "quantity": f"classifier accuracy on generated FIRST images, guidance {guidance:g} (%)",
            **common,
            "paper": NOT_GIVEN if paper is None else f"{paper:g}",
            "reading": f"1-sigma Wilson interval; n = {n} generated images{main}"
                       f"{'' if main else _paired_reading(row, main_guidance)}",
        })
    return rows


def _sizes(r) -> str:
    """The sizes a size-matched number was measured at, as text."""
    return (f"{int(r['n_reference'])} real vs {int(r['n_compared'])} compared, "
            f"{int(r['repeats'])} partitions")


def _fidelity_rows(dataset: str, summary: pd.DataFrame) -> list[dict]:
    needed = ["distribution", "metric", "real_vs_generated", "real_vs_real_floor", "floor_sd",
              "generated_over_floor", "generated_floor_z", "n_reference", "n_compared", "repeats"]
    missing = [c for c in needed if c not in summary.columns]
    if missing:
        raise InputFileError(f"summary table of {dataset} lacks column(s) {', '.join(missing)}")
    index = summary.set_index(["distribution", "metric"])
    rows = []
    for key, metric in _FIDELITY_ROWS:
        if (key, metric) not in index.index:
            continue
        r = index.loc[(key, metric)]
        floor, sd = float(r["real_vs_real_floor"]), float(r["floor_sd"])
        label = r["label"] if "label" in r else key
        rows.append({
            "section": "fidelity",
            "dataset": dataset,
            "quantity": f"{label}, {metric}: generated / floor",
            "value": float(r["generated_over_floor"]),
            # The ratio's spread from sampling alone: the floor's relative spread.
            "uncertainty": sd / floor if floor > 0 and np.isfinite(sd) else np.nan,
            "interval_low": np.nan,
            "interval_high": np.nan,
            "z": float(r["generated_floor_z"]),
            "n": _sizes(r),
            "paper": NOT_GIVEN,
            "reading": "about 1 (|z| within ~2) = as close to the real set as real data is to itself at these sizes",
        })
    if ("embeddings", "KID") in index.index:
        r = index.loc[("embeddings", "KID")]
        rows.append({
            "section": "fidelity",
            "dataset": dataset,
            "quantity": "KID of classifier embeddings",
            "value": float(r["real_vs_generated"]),
            "uncertainty": float(r["floor_sd"]),
            "interval_low": np.nan,
            "interval_high": np.nan,
            "z": float(r["generated_floor_z"]),
            "n": _sizes(r),
            "paper": NOT_GIVEN,
            "reading": (
                f"floor {float(r['real_vs_real_floor']):.3g} +- {float(r['floor_sd']):.3g} (uncertainty = floor spread); "
                f"KID is unbiased (0 for equal distributions), read z: within ~+-2 is noise"
                + (f"; real reference: {r['reference']}" if "reference" in r and isinstance(r["reference"], str) else "")
            ),
        })
    return rows


def _number(values: dict, key: str) -> float:
    value = values.get(key)
    return float("nan") if value is None else float(value)


def _size_rows(size: dict) -> list[dict]:
    """The size-conditioning row: partial Spearman rho given log peak flux.

    Brighter sources look larger, so the raw rho of measured vs requested size is
    high even for a model blind to size; the partial rho and the within-flux-bin
    shuffle null (its spread is the row's uncertainty) measure the size control.
    """
    generated, real = size.get("generated", {}), size.get("real", {})
    measure = {"feret": "max Feret", "las": "catalogue LAS"}.get(
        size.get("size_measure", {}).get("size_source", "las"), "catalogue LAS")
    return [{
        "section": "size conditioning",
        "dataset": "lotss",
        "quantity": "partial Spearman rho given log peak flux, measured vs requested size, generated images",
        "value": _number(generated, "partial_spearman_rho"),
        "uncertainty": _number(generated, "null_rho_std"),
        "z": _number(generated, "null_z"),
        "paper": NOT_GIVEN,
        "reading": (f"0 = no size control beyond flux; requested size = {measure}; flux-bin shuffle null "
                    f"z {_number(generated, 'null_z'):.1f}; raw rho {_number(generated, 'spearman_rho'):.2f} "
                    f"generated, {_number(real, 'spearman_rho'):.2f} real (partial "
                    f"{_number(real, 'partial_spearman_rho'):.2f}); scatter of log10(measured / requested) "
                    f"{_number(generated, 'scatter_log_ratio'):.2f} dex generated vs "
                    f"{_number(real, 'scatter_log_ratio'):.2f} real; n = {generated.get('n', 0)}"),
    }]


def _map_rows(validation: pd.DataFrame) -> list[dict]:
    values = validation.set_index("measure")["value"]
    readings = {
        "completeness": "truth sources recovered by PyBDSF",
        "reliability": "PyBDSF sources that are truth sources",
        "flux_ratio_median": "median S_recovered / S_true",
    }
    return [{
        "section": "simulated map",
        "dataset": "lotss",
        "quantity": f"{key.replace('_', ' ')} (PyBDSF on the map)",
        "value": float(values[key]),
        "uncertainty": np.nan,
        "paper": NOT_GIVEN,
        "reading": f"{reading}; {int(values.get('placed_sources', 0))} placed, "
                   f"{int(values.get('recovered_sources', 0))} recovered",
    } for key, reading in readings.items() if key in values.index]


def overview_table(accuracy: pd.DataFrame, summaries: dict[str, pd.DataFrame], *, main_guidance: float,
                   size: dict | None = None, skymap: pd.DataFrame | None = None) -> pd.DataFrame:
    """The overview rows: judge accuracy, accuracy per guidance, floor ratios per dataset.

    Parameters
    ----------
    accuracy : DataFrame
        ``results/evaluation/classes/accuracy.csv``
        (:func:`radiogen.evaluation.classes.accuracy_table`): the real test
        split has guidance NaN.
    summaries : dict
        Dataset name -> its summary table
        (:func:`radiogen.evaluation.summary.summary_table`).
    main_guidance : float, keyword-only
        Guidance of the generated FIRST set in the summary tables.
    size : dict, optional, keyword-only
        ``results/evaluation/size_conditioning.json``.
    skymap : DataFrame, optional, keyword-only
        ``results/skymap/validation.tsv``.

    Returns
    -------
    DataFrame
        Columns :data:`OVERVIEW_COLUMNS`; ``paper`` is text (a number or
        ``"not given"``); accuracies carry a 1-sigma Wilson interval
        (``interval_low``, ``interval_high``), floor ratios the spread
        expected from sampling (``uncertainty``), their z-score and the sizes
        they were measured at (``n``); ``reading`` says which.
    """
    rows = _accuracy_rows(accuracy, main_guidance=main_guidance)
    for dataset, summary in summaries.items():
        rows += _fidelity_rows(dataset, summary)
    if size is not None:
        rows += _size_rows(size)
    if skymap is not None:
        rows += _map_rows(skymap)
    return pd.DataFrame(rows, columns=OVERVIEW_COLUMNS)


def write_overview_html(table: pd.DataFrame, path) -> None:
    """The overview as a standalone HTML page with how to read it."""
    write_table_html(
        table,
        path,
        title="What this run achieved",
        notes=[
            "Judge: the FIRST morphology classifier on the real test split; its accuracy bounds what class "
            "conditioning can be shown to achieve. Accuracies carry 1-sigma (68.27%) Wilson score intervals "
            "(interval_low .. interval_high); guidance values sampled from the same latents are compared image by "
            "image with McNemar's exact test.",
            "Paper numbers: Vicanek Martinez et al. (2024), Sect. 6.3 (81.5% on the real test split, 83.4% on the "
            "set generated at guidance 0.75); the other rows of its Table 7 are not given in the text.",
            "Fidelity: size-matched distances real vs generated over the same distance between two parts of the "
            "real data (the noise floor), medians over seeded partitions; see the summary tables. "
            "uncertainty: the ratio's spread from sampling (floor spread / floor); z: (generated - floor) / floor "
            "spread; n: the sizes it was measured at (the floor shrinks as 1/sqrt(m), so a ratio needs its m). "
            "KID is unbiased (0 for equal distributions), so read its z.",
        ],
    )
