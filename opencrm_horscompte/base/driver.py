"""Fixed statements at driver speed: a Core statement compiled once per dialect and run on
the DBAPI cursor (:class:`DriverStatement`), and pooled connections and write transactions
that skip SQLAlchemy's execution and transaction layers (:class:`DriverConnection`,
:class:`driver_connection`, :class:`driver_transaction`). For the hot paths; ``base.db``
re-exports every public name, its documented home."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter, methodcaller
from typing import Any

from sqlalchemy import Dialect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.pool import PoolProxiedConnection


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positional: bool  # the driver takes a tuple (SQLite), else a dict (psycopg)
    # one input per bind name: (bind name, parameter key, default value, bind processor or
    # None), each processed once per execution
    inputs: tuple[tuple[str, str, Any, Any], ...]
    defaults: dict[str, Any]  # every input's key -> its default value
    values_of: Callable[[Mapping[str, Any]], tuple[Any, ...]]  # the inputs' values, in order
    processed: tuple[tuple[int, Any], ...]  # (input index, bind processor) where one applies
    # the input of each driver parameter, in the driver's order, when a positional
    # statement uses a bind more than once (None: the inputs are that order)
    order: tuple[int, ...] | None
    # a result row from its values: a named tuple of the result columns, or a plain tuple
    # when the statement declares none (``text()`` without ``.columns()``)
    make_row: Callable[[Iterable[Any]], tuple[Any, ...]]
    processors: tuple[Any, ...] | None  # result processors, None when no column needs one
    error: type[Exception]  # the driver's base exception


class DriverStatement:
    """A fixed Core statement compiled once per dialect and run on the DBAPI cursor of the
    caller's connection, inside its transaction: the driver's own cost plus a few
    microseconds, instead of SQLAlchemy's execution context per call (about 14 µs against
    1.5 µs on SQLite for a primary-key read, measured by the benchmark's README).

    Parameters go through the bind processors SQLAlchemy would apply (timestamps to UTC,
    SQLite's datetime text), and result rows through its result processors (named tuples,
    timestamps read back aware); ``before_cursor_execute`` / ``after_cursor_execute``
    listeners are told of each statement, so statement recorders and driver clocks see it
    like any other (``context`` is None for them; listeners on the engine, where
    ``event.listen(engine, ...)`` puts them, not on one connection). Driver errors are
    raised as SQLAlchemy raises them (``IntegrityError``...). Kept for the statements of
    the hot paths that run on every request; everything else goes through the ORM or Core.
    """

    def __init__(self, statement: Any) -> None:
        self.statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def _for(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            done = self.statement.compile(dialect=dialect)
            binds: dict[str, tuple[str, str, Any, Any]] = {}
            for name, bind in done.binds.items():
                processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
                binds[name] = (name, bind.key, bind.effective_value, processor)
            positional = bool(done.positional)
            bind_names = list(binds)
            order = list(done.positiontup or []) if positional else bind_names
            columns = done._result_columns
            processors = tuple(
                column.type.dialect_impl(dialect).result_processor(dialect, None)
                for column in columns
            )
            names = [column.keyname for column in columns]
            make_row: Callable[[Iterable[Any]], tuple[Any, ...]] = tuple
            if names:
                row = namedtuple("Row", names, rename=True)  # type: ignore[misc]
                make_row = row._make
            inputs = tuple(binds.values())
            defaults: dict[str, Any] = {}
            for _name, key, default, _processor in inputs:
                # binds cloned from one (a CASE used twice) share their key and value
                existing = defaults.setdefault(key, default)
                if existing is not default and existing != default:
                    raise ValueError(f"bind key {key!r} has two default values")
            compiled = self._compiled[dialect.name] = _Compiled(
                done.string,
                positional,
                inputs,
                defaults,
                _getter([key for _name, key, _default, _processor in inputs]),
                tuple(
                    (index, processor)
                    for index, (_name, _key, _default, processor) in enumerate(inputs)
                    if processor is not None
                ),
                None if order == bind_names else tuple(bind_names.index(name) for name in order),
                make_row,
                processors if any(processors) else None,
                dialect.loaded_dbapi.Error,
            )
        return compiled

    def execute(self, connection: Any, parameters: Mapping[str, Any] | None = None) -> Any:
        """Run with ``parameters`` (by bind name); returns the DBAPI cursor, to fetch from."""
        return self._run(self._for(connection.dialect), connection, parameters)

    def all(self, connection: Any, parameters: Mapping[str, Any] | None = None) -> list[Any]:
        """Every result row, processed (named tuples)."""
        compiled, raw = self._fetched(connection, parameters, _FETCH_ALL)
        return [self._row(compiled, values) for values in raw]

    def first(self, connection: Any, parameters: Mapping[str, Any] | None = None) -> Any:
        """The first result row, processed, or None; the others are discarded (a
        ``RETURNING`` statement has made all its changes by then)."""
        compiled, values = self._fetched(connection, parameters, _FETCH_ONE)
        return None if values is None else self._row(compiled, values)

    def _fetched(
        self, connection: Any, parameters: Mapping[str, Any] | None, fetch: Callable[[Any], Any]
    ) -> tuple[_Compiled, Any]:
        """Run, then ``fetch(cursor)`` before the cursor is closed."""
        compiled = self._for(connection.dialect)
        cursor = self._run(compiled, connection, parameters)
        try:
            return compiled, fetch(cursor)
        finally:
            cursor.close()

    @staticmethod
    def _row(compiled: _Compiled, values: Sequence[Any]) -> Any:
        processors = compiled.processors
        if processors is None:
            return compiled.make_row(values)
        return compiled.make_row(
            processor(value) if processor is not None else value
            for processor, value in zip(processors, values, strict=True)
        )

    @staticmethod
    def _run(compiled: _Compiled, connection: Any, parameters: Mapping[str, Any] | None) -> Any:
        given = {**compiled.defaults, **parameters} if parameters else compiled.defaults
        values: Sequence[Any] = compiled.values_of(given)
        if compiled.processed:
            values = list(values)
            for index, processor in compiled.processed:
                values[index] = processor(values[index])
        arguments: Any
        if not compiled.positional:
            arguments = {
                bind[0]: value for bind, value in zip(compiled.inputs, values, strict=True)
            }
        elif compiled.order is None:
            arguments = tuple(values)
        else:
            arguments = tuple([values[index] for index in compiled.order])
        sql = compiled.sql
        cursor = connection.connection.dbapi_connection.cursor()
        # the engine's cursor listeners (recorders, clocks), tested where the test is cheap
        listened = bool(connection.engine.dispatch.before_cursor_execute)
        if listened:
            connection.dispatch.before_cursor_execute(
                connection, cursor, sql, arguments, None, False
            )
        try:
            cursor.execute(sql, arguments)
        except compiled.error as error:  # raised as SQLAlchemy would (IntegrityError...)
            cursor.close()
            wrapped = DBAPIError.instance(
                sql,
                arguments,
                error,
                compiled.error,
                hide_parameters=True,  # logged by hosts; the parameters are personal data
                dialect=connection.dialect,
            )
            raise wrapped from error
        if listened:
            connection.dispatch.after_cursor_execute(
                connection, cursor, sql, arguments, None, False
            )
        return cursor


_FETCH_ALL = methodcaller("fetchall")
_FETCH_ONE = methodcaller("fetchone")


def _getter(keys: Sequence[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A function of a mapping holding every key: its values, in ``keys``' order (a tuple,
    whatever the number of keys)."""
    if not keys:
        return lambda _mapping: ()
    if len(keys) == 1:
        key = keys[0]
        return lambda mapping: (mapping[key],)
    return itemgetter(*keys)


# SQLite's transaction control, at driver speed: every request begins one or two.
BEGIN = DriverStatement(text("BEGIN"))
BEGIN_IMMEDIATE = DriverStatement(text("BEGIN IMMEDIATE"))


class DriverConnection:
    """A pooled DBAPI connection for the hot paths, at driver speed: what
    :class:`DriverStatement` reads of a SQLAlchemy ``Connection`` (``dialect``, ``engine``,
    the engine's cursor listeners, ``info``), without its execution and transaction
    machinery. Made by :func:`driver_connection` (statements outside a transaction) and
    :func:`driver_transaction`; :meth:`transaction` runs one write transaction on it.

    Part of the host contract since 0.2: a host's ``queue_mail_on_connection`` receives one
    inside the caller's write transaction (``dbapi_connection`` is the driver's PEP 249
    connection).
    """

    def __init__(self, engine: Engine, pooled: PoolProxiedConnection) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self.dispatch = engine.dispatch
        self.connection = pooled  # the pool's proxy: ``.dbapi_connection`` is the driver's

    @property
    def dbapi_connection(self) -> Any:
        """The driver's own connection (``sqlite3.Connection``, ``psycopg.Connection``)."""
        return self.connection.dbapi_connection

    @property
    def info(self) -> dict[Any, Any]:
        """The pooled connection's ``info``, as ``Connection.info`` gives it."""
        return self.connection.info

    def in_transaction(self) -> bool:
        """Whether a transaction is open (one the driver began implicitly included)."""
        dbapi = self.dbapi_connection
        if self.dialect.name == "sqlite":
            return bool(dbapi.in_transaction)
        status = getattr(getattr(dbapi, "info", None), "transaction_status", None)
        return status != 0  # psycopg's IDLE; unknown drivers: assume one is open

    def transaction(self) -> _Transaction:
        """One write transaction: ``BEGIN IMMEDIATE`` on SQLite (the write lock is held
        before anything is read; PostgreSQL begins with the first statement), commit when
        the block ends, rollback when it raises. Engine ``begin``/``commit`` listeners are
        not told (cursor listeners are)."""
        return _Transaction(self)

    def commit(self) -> None:
        """Commit the open transaction (a read's implicit one on PostgreSQL); a commit the
        database refuses is rolled back and raised as SQLAlchemy's error."""
        dialect = self.dialect
        try:
            dialect.do_commit(self.connection)
        except dialect.loaded_dbapi.Error as error:
            _rollback(dialect, self.connection)
            raise DBAPIError.instance("COMMIT", None, error, dialect.loaded_dbapi.Error) from error


class _Transaction:
    """:meth:`DriverConnection.transaction`'s block. The hot paths open one per request, so
    it is a class rather than a generator-based context manager (a few microseconds less)."""

    __slots__ = ("_connection",)

    def __init__(self, connection: DriverConnection) -> None:
        self._connection = connection

    def __enter__(self) -> DriverConnection:
        connection = self._connection
        if connection.dialect.name == "sqlite":
            BEGIN_IMMEDIATE.execute(connection).close()
        return connection

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        connection = self._connection
        if kind is None:
            connection.commit()
        else:
            _rollback(connection.dialect, connection.connection)


class driver_connection:
    """A pooled connection of ``engine`` at driver speed, returned to the pool (rolled back
    if a transaction was left open) when the block ends."""

    __slots__ = ("_engine", "_pooled")

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._pooled: PoolProxiedConnection | None = None

    def __enter__(self) -> DriverConnection:
        engine = self._engine
        dbapi_error = engine.dialect.loaded_dbapi.Error
        try:
            self._pooled = pooled = engine.raw_connection()
        except dbapi_error as error:  # unlike engine.connect(), raw_connection() doesn't wrap
            raise DBAPIError.instance(None, None, error, dbapi_error) from error
        return DriverConnection(engine, pooled)

    def __exit__(self, *_: object) -> None:
        if self._pooled is not None:
            self._pooled.close()
            self._pooled = None


class driver_transaction:
    """One write transaction on a pooled connection at driver speed, for a hot path whose
    every statement is a :class:`DriverStatement` (see :meth:`DriverConnection.transaction`).
    Measured on SQLite: about 14 µs for an empty transaction, against 40 µs through
    ``engine.begin()`` and 5.5 µs on the raw driver (the benchmark's README)."""

    __slots__ = ("_connected", "_transaction")

    def __init__(self, engine: Engine) -> None:
        self._connected = driver_connection(engine)
        self._transaction: _Transaction | None = None

    def __enter__(self) -> DriverConnection:
        connection = self._connected.__enter__()
        try:
            self._transaction = transaction = connection.transaction()
            return transaction.__enter__()
        except BaseException:
            self._connected.__exit__()
            raise

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        try:
            if self._transaction is not None:
                self._transaction.__exit__(kind, *rest)
        finally:
            self._connected.__exit__()


def connection_of(
    target: OrmSession | Connection | DriverConnection,
) -> Connection | DriverConnection:
    """The connection to run a :class:`DriverStatement` on for ``target``: a SQLAlchemy
    ``Connection`` or a :class:`DriverConnection` as it is, an ORM session's connection
    (which begins its transaction)."""
    if isinstance(target, Connection | DriverConnection):
        return target
    return target.connection()


def _rollback(dialect: Dialect, pooled: PoolProxiedConnection) -> None:
    """Roll back; a connection that can't (lost) is dropped from the pool, not reused."""
    try:
        dialect.do_rollback(pooled)
    except Exception:
        pooled.invalidate()
