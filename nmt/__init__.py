"""nmt: English→Korean neural machine translation with recurrent encoders and attention."""

__version__ = "0.1.0"
