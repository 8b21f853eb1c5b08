"""A minimal PostgreSQL client over libpq (ctypes), so the bench needs no Python packages
beyond the standard library: libpq5 comes with postgresql-client and libpq-dev."""

import ctypes
import ctypes.util

_lib = None


def _libpq():
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("pq") or "libpq.so.5"
        lib = ctypes.CDLL(name)
        lib.PQconnectdb.restype = ctypes.c_void_p
        lib.PQconnectdb.argtypes = [ctypes.c_char_p]
        lib.PQstatus.argtypes = [ctypes.c_void_p]
        lib.PQerrorMessage.restype = ctypes.c_char_p
        lib.PQerrorMessage.argtypes = [ctypes.c_void_p]
        lib.PQfinish.argtypes = [ctypes.c_void_p]
        lib.PQexec.restype = ctypes.c_void_p
        lib.PQexec.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.PQexecParams.restype = ctypes.c_void_p
        lib.PQexecParams.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p,
                                     ctypes.POINTER(ctypes.c_char_p), ctypes.c_void_p, ctypes.c_void_p,
                                     ctypes.c_int]
        lib.PQresultStatus.argtypes = [ctypes.c_void_p]
        lib.PQresultErrorMessage.restype = ctypes.c_char_p
        lib.PQresultErrorMessage.argtypes = [ctypes.c_void_p]
        lib.PQntuples.argtypes = [ctypes.c_void_p]
        lib.PQnfields.argtypes = [ctypes.c_void_p]
        lib.PQgetvalue.restype = ctypes.c_char_p
        lib.PQgetvalue.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.PQgetisnull.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.PQclear.argtypes = [ctypes.c_void_p]
        _lib = lib
    return _lib


class PgError(Exception):
    pass


class Pg:
    """One autocommit connection. query() returns rows of str/None."""

    def __init__(self, conninfo):
        self.lib = _libpq()
        self.conn = self.lib.PQconnectdb(conninfo.encode())
        if self.lib.PQstatus(self.conn) != 0:
            msg = self.lib.PQerrorMessage(self.conn).decode(errors="replace").strip()
            self.lib.PQfinish(self.conn)
            self.conn = None
            raise PgError(f"cannot connect ({conninfo}): {msg}")

    def query(self, sql, *params):
        """Runs sql; params (str or None) are bound to $1, $2, ... as text, never pasted in."""
        if params:
            values = (ctypes.c_char_p * len(params))(*(None if v is None else str(v).encode() for v in params))
            res = self.lib.PQexecParams(self.conn, sql.encode(), len(params), None, values, None, None, 0)
        else:
            res = self.lib.PQexec(self.conn, sql.encode())
        if not res:
            raise PgError(self.lib.PQerrorMessage(self.conn).decode(errors="replace").strip())
        try:
            status = self.lib.PQresultStatus(res)
            if status not in (1, 2):  # PGRES_COMMAND_OK, PGRES_TUPLES_OK
                msg = self.lib.PQresultErrorMessage(res).decode(errors="replace").strip()
                raise PgError(f"{msg}\n  in: {sql[:300]}")
            rows = []
            if status == 2:
                nf = self.lib.PQnfields(res)
                for r in range(self.lib.PQntuples(res)):
                    rows.append(tuple(None if self.lib.PQgetisnull(res, r, c)
                                      else self.lib.PQgetvalue(res, r, c).decode()
                                      for c in range(nf)))
            return rows
        finally:
            self.lib.PQclear(res)

    def value(self, sql, *params):
        rows = self.query(sql, *params)
        return rows[0][0] if rows else None

    def close(self):
        if self.conn:
            self.lib.PQfinish(self.conn)
            self.conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
