"""Command-line interface: ``facesearch detect | verify | models | eval``."""
