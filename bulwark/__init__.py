"""bulwark: infrastructure as code for a secure two-site mail, calendar, contacts and files
platform on Debian 12."""

__version__ = "0.1.0"
