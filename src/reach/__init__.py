"""reach: reach and effect of export-promotion programmes, from statistical-office microdata."""

__version__ = "0.1.0"
