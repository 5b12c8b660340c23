"""The SMS platform side: the get-rpt client, its HTTP exchange and transport.

`client` logs in, calls get-rpt and classifies each answer into an outcome; `exchange` holds one
request to a total deadline; `wire` is the kept-alive HTTP/1.1 transport. Independent of `spool`
and `kafka`; imported by the service (which hands a client to each fetcher).
"""
