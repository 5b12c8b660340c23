"""The record schema, installed as the package `connector.avro` (see pyproject.toml).

This file exists because setuptools' editable installs cannot map a namespace package to
another directory. Do not `import avro` from the repository root expecting Apache Avro: this
package shadows it there.
"""
