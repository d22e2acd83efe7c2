"""The load harness shared by the scenarios in ``loadtests/`` and by the tests:

- ``target``: where the server answers and how to reach it, read once from ``segserve.settings.Settings``;
- ``client``: ``SegmentClient``, Segment and ListModels over gRPC and HTTP, every failure an ``Outcome`` code;
- ``drive``: closed-loop, fixed-count and open-loop drivers, and a measured row at one concurrency;
- ``launcher``: ``bentoml serve`` on free ports, waiting until it serves, stopping it (SIGKILL if it lingers);
- ``stats``: percentiles, markdown tables and CSV files;
- ``processes``: the serving process tree, its workers, and the RSS of the tree sampled over time;
- ``images``: the photos the scenarios send (synthetic or read from a folder).
"""
