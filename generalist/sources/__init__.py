"""What the source adapters in tasks/*.py share: checked reading of published files (csv, JSON,
JSON lines, parquet, images), patient-level splits, and DICOM decoding."""
