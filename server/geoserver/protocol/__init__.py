"""Wire codecs without I/O: RESP (hiredis), HTTP (h11), and the JSON/RESP reply encoders."""
