"""A task row's one read-modify-write path: ``lock()`` it, change the model, ``write()`` the fields.

Every transaction of progress.store that changes a task goes through these two functions. They run
SQL built once per database and field list from the model's metadata: through the ORM's querysets
the same two statements were built and compiled again on every report, several times the cost of
running them (``python -m bench.store`` measures it).
"""

from __future__ import annotations

import functools
from typing import Any

from django.db import connections, models, router

from .models import Task

_NEEDS_CONVERTERS = (models.DateTimeField, models.DateField, models.TimeField)


def using() -> str:
    """The database alias task rows are written to (the router's choice)."""
    return router.db_for_write(Task)


def lock(task_id: str, fields: tuple[str, ...]) -> Task | None:
    """The task's row, locked until the transaction ends, with only ``fields`` loaded; None if absent.

    FOR UPDATE locks the row on PostgreSQL. SQLite has no row locks: there the IMMEDIATE
    transaction the settings ask for holds the database's write lock, serialising writers.
    """
    alias = using()
    names = _in_model_order(fields)
    sql = _select(alias, names)
    if _converted(names):
        # Datetimes need the backend's converters (SQLite returns text): raw() applies them.
        found = list(Task.objects.db_manager(alias).raw(sql, [task_id]))
        return found[0] if found else None
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, [task_id])
        row = cursor.fetchone()
    return None if row is None else Task.from_db(alias, list(names), row)


def write(task: Task, fields: tuple[str, ...]) -> None:
    """Store ``fields`` of a task locked by ``lock()``, as each field prepares its value."""
    alias = using()
    connection = connections[alias]
    values = [field.get_db_prep_save(getattr(task, field.name), connection) for field in _fields(fields)]
    with connection.cursor() as cursor:
        cursor.execute(_update(alias, fields), [*values, task.pk])


@functools.cache
def _in_model_order(names: tuple[str, ...]) -> tuple[str, ...]:
    """The primary key and ``names``, in the model's order: Model.from_db() expects its values so."""
    wanted = {"task_id", *names}
    return tuple(field.name for field in Task._meta.concrete_fields if field.name in wanted)


@functools.cache
def _fields(names: tuple[str, ...]) -> list[models.Field[Any, Any]]:
    found = [Task._meta.get_field(name) for name in names]
    assert all(isinstance(field, models.Field) and not field.is_relation for field in found)
    return found  # type: ignore[return-value]


@functools.cache
def _converted(names: tuple[str, ...]) -> bool:
    return any(isinstance(field, _NEEDS_CONVERTERS) for field in _fields(names))


@functools.cache
def _select(alias: str, fields: tuple[str, ...]) -> str:
    connection = connections[alias]
    columns = ", ".join(_column(alias, name) for name in fields)
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    return f"SELECT {columns} FROM {_table(alias)} WHERE {_column(alias, 'task_id')} = %s{lock}"


@functools.cache
def _update(alias: str, fields: tuple[str, ...]) -> str:
    assignments = ", ".join(f"{_column(alias, name)} = %s" for name in fields)
    return f"UPDATE {_table(alias)} SET {assignments} WHERE {_column(alias, 'task_id')} = %s"


def _table(alias: str) -> str:
    return str(connections[alias].ops.quote_name(Task._meta.db_table))


def _column(alias: str, name: str) -> str:
    (field,) = _fields((name,))
    assert field.column is not None
    return str(connections[alias].ops.quote_name(field.column))
