"""The durable write-ahead spool: raw get-rpt bodies kept, fsynced, until Kafka has them.

`spool.Spool` is the face (append, read, release, renumber); the other modules are its bytes,
memory, segments, recovery and filesystem seams. Independent of `platform` and `kafka`; the
fetcher and publish loop get a `Spool` handed in by the service.
"""
