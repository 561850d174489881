"""The command-line clients (``kernelhub runtime|token|drive|images|quota``): one options
module, one HTTP client base.
"""
