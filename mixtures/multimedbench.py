"""The Med-PaLM M training mixture: Table A.1 of arXiv 2307.14334 (rates in percent).

Left out: PrecisionFDA Truth Challenge V2 genomic variant calling (1.56%): its data needs a
registered download and its task is image classification of read pileups, which this
repository does not declare. The remaining rates are normalised over what is present.
CBIS-DDSM's 1.56% covers mass and calcification together, so each gets half.
"""

from generalist.catalog.mixture import MIXTURES, Mixture

MULTIMEDBENCH_RATES = (
    ("medqa", 3.13),
    ("medmcqa", 6.25),
    ("mimic_iii_summarization", 3.13),
    ("vqa_rad", 0.15),
    ("slake_vqa", 2.64),
    ("path_vqa", 1.90),
    ("mimic_cxr_report", 59.90),
    ("mimic_cxr_classification", 11.98),
    ("pad_ufes_20", 6.25),
    ("vindr_mammo", 1.56),
    ("cbis_ddsm_mass", 0.78),
    ("cbis_ddsm_calc", 0.78),
)

MIXTURES.register(
    Mixture(
        name="multimedbench",
        tasks=MULTIMEDBENCH_RATES,
        description="Med-PaLM M's MultiMedBench training mixture (Table A.1).",
        notes="PrecisionFDA (1.56%) left out; PubMedQA is evaluation only.",
        min_per_batch=1,
    )
)
