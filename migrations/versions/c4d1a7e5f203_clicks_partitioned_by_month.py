"""clicks partitioned by month (PostgreSQL); click_id unique with created_at

PostgreSQL: ``clicks`` becomes ``PARTITION BY RANGE (created_at)``: a partition per UTC month
(``clicks_yYYYYmMM``) from the oldest row's month to two months after this one, and
``clicks_default``. Rows are copied into the new table (every row kept, ids unchanged), the id
sequence ``clicks_id_seq`` goes on numbering, every index is made again on the partitioned
table. A unique index of a partitioned table must include the partition key, so the primary key
is ``(id, created_at)`` and the click ID is unique with ``created_at``
(``uq_clicks_click_id_created_at``, the index ``INSERT ... ON CONFLICT`` names).

SQLite: the table stays a plain one; only the unique index changes.

Downgrade copies the rows back into a plain table (it fails on a click ID stored twice with
two different times, which the single-column unique key cannot hold).

Revision ID: c4d1a7e5f203
Revises: 81b82bf475fc
Create Date: 2026-12-09 10:00:00.000000

"""
from datetime import UTC, datetime

from alembic import op
import sqlalchemy as sa
import partnernet.models.base


# revision identifiers, used by Alembic.
revision = 'c4d1a7e5f203'
down_revision = '81b82bf475fc'
branch_labels = None
depends_on = None

COLUMNS = ('id', 'click_id', 'link_id', 'campaign_id', 'partner_id', 'created_at', 'ip', 'user_agent',
           'referer', 'visitor', 'sub1', 'sub2', 'sub3', 'sub4', 'sub5', 'method', 'is_bot', 'is_unique',
           'flag', 'fallback_reason', 'destination')
INDEXES = (  # (name, columns), besides the unique click ID index
    ('ix_clicks_campaign_ip_created', ['campaign_id', 'ip', 'created_at']),
    ('ix_clicks_campaign_visitor_created', ['campaign_id', 'visitor', 'created_at']),
    ('ix_clicks_created_at', ['created_at']),
    ('ix_clicks_link_visitor_created', ['link_id', 'visitor', 'created_at']),
    ('ix_clicks_partner_id', ['partner_id']),
)
MONTHS_AHEAD = 2


def _click_table(**kw):
    """``clicks`` as of this revision, without primary key and indexes (added after the copy);
    ``id`` numbered by the existing sequence."""
    op.create_table('clicks',
    sa.Column('id', sa.BigInteger(), server_default=sa.text("nextval('clicks_id_seq'::regclass)"), nullable=False),
    sa.Column('click_id', sa.String(length=40), nullable=False),
    sa.Column('link_id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('partner_id', sa.Integer(), nullable=False),
    sa.Column('created_at', partnernet.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ip', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.Text(), nullable=True),
    sa.Column('referer', sa.Text(), nullable=True),
    sa.Column('visitor', sa.String(length=64), nullable=False),
    sa.Column('sub1', sa.String(length=255), nullable=True),
    sa.Column('sub2', sa.String(length=255), nullable=True),
    sa.Column('sub3', sa.String(length=255), nullable=True),
    sa.Column('sub4', sa.String(length=255), nullable=True),
    sa.Column('sub5', sa.String(length=255), nullable=True),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('is_bot', sa.Boolean(), nullable=False),
    sa.Column('is_unique', sa.Boolean(), nullable=False),
    sa.Column('flag', sa.String(length=32), nullable=True),
    sa.Column('fallback_reason', sa.String(length=32), nullable=True),
    sa.Column('destination', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_clicks_campaign_id_campaigns')),
    sa.ForeignKeyConstraint(['link_id'], ['links.id'], name=op.f('fk_clicks_link_id_links')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_clicks_partner_id_partners')),
    **kw
    )


def _month_index(at: datetime) -> int:
    return at.year * 12 + at.month - 1


def _month(index: int) -> datetime:
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _copy_from(old: str) -> None:
    cols = ', '.join(COLUMNS)
    op.execute(f'INSERT INTO clicks ({cols}) SELECT {cols} FROM {old}')
    op.execute(f'DROP TABLE {old}')
    op.execute('ALTER SEQUENCE clicks_id_seq OWNED BY clicks.id')


def upgrade():
    if op.get_bind().dialect.name != 'postgresql':
        with op.batch_alter_table('clicks', schema=None) as batch_op:
            batch_op.drop_constraint('uq_clicks_click_id', type_='unique')
            batch_op.create_index('uq_clicks_click_id_created_at', ['click_id', 'created_at'], unique=True)
        return

    op.execute('ALTER TABLE clicks RENAME TO clicks_unpartitioned')
    op.execute('ALTER SEQUENCE clicks_id_seq OWNED BY NONE')  # kept when the old table goes
    oldest = op.get_bind().scalar(sa.text('SELECT min(created_at) FROM clicks_unpartitioned'))
    _click_table(postgresql_partition_by='RANGE (created_at)')
    now = datetime.now(UTC)
    first = _month_index(oldest.astimezone(UTC) if oldest is not None else now)
    for index in range(min(first, _month_index(now)), _month_index(now) + MONTHS_AHEAD + 1):
        start, end = _month(index), _month(index + 1)
        op.execute(f"CREATE TABLE clicks_y{start.year:04d}m{start.month:02d} PARTITION OF clicks "
                   f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')")
    op.execute('CREATE TABLE clicks_default PARTITION OF clicks DEFAULT')  # rows of later months
    _copy_from('clicks_unpartitioned')
    op.create_primary_key(op.f('pk_clicks'), 'clicks', ['id', 'created_at'])
    op.create_index('uq_clicks_click_id_created_at', 'clicks', ['click_id', 'created_at'], unique=True)
    for name, cols in INDEXES:
        op.create_index(name, 'clicks', cols, unique=False)


def downgrade():
    if op.get_bind().dialect.name != 'postgresql':
        with op.batch_alter_table('clicks', schema=None) as batch_op:
            batch_op.drop_index('uq_clicks_click_id_created_at')
            batch_op.create_unique_constraint('uq_clicks_click_id', ['click_id'])
        return

    op.execute('ALTER TABLE clicks RENAME TO clicks_partitioned')
    op.execute('ALTER SEQUENCE clicks_id_seq OWNED BY NONE')
    op.execute('ALTER TABLE clicks_partitioned DROP CONSTRAINT pk_clicks')  # index names are global
    op.execute('DROP INDEX uq_clicks_click_id_created_at')
    for name, _cols in INDEXES:
        op.execute(f'DROP INDEX {name}')
    _click_table()
    _copy_from('clicks_partitioned')  # its partitions go with it
    op.create_primary_key(op.f('pk_clicks'), 'clicks', ['id'])
    op.create_unique_constraint(op.f('uq_clicks_click_id'), 'clicks', ['click_id'])
    for name, cols in INDEXES:
        op.create_index(name, 'clicks', cols, unique=False)
