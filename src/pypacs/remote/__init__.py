"""The peers of ``[remotes.*]``, sending studies to them, and the jobs that do so.

``registry`` holds the one type of a configured peer (``Peer``) and their lookup
(``Peers``); ``export`` the ``Exporter`` protocol (implemented by ``net``) with the one set
of types for progress and failure; ``jobs`` runs exports as jobs whose state lives in the
index, so that any node can report them. May import ``archive``, ``model`` and ``errors``;
never ``net``, ``web``, ``index`` or ``store``.
"""
