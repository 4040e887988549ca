"""Built-in task families, one module per dataset family (installed as generalist.tasks)."""

from generalist.tasks import (  # noqa: F401
    declared,
    easy_vqa,
    mammography,
    medical_qa,
    medical_vqa,
    medmnist,
    mimic_cxr,
    mimic_iii,
    pad_ufes,
)
