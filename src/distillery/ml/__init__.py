"""The distillery library, with no Kedro import.

Subpackages import one way: ``models`` <- ``data`` <- ``compress`` <- ``serve`` <- ``report``;
``train`` builds on ``models`` and ``data``; ``metrics`` is a leaf anyone may import.
"""
