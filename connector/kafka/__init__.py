"""The Kafka side: transactional producers, the records they carry, progress and topics.

One account's producer and what its errors mean (`publisher`), the open transaction
(`checkpoint`), data/dead-letter/progress/archive records, committed progress, topic setup,
native produce and cluster membership. Independent of `platform` and `spool`; imported by the
pipeline, the service, `checks` and `replay`.
"""
