"""click stream bookkeeping: producers, epochs and losses

Revision ID: d7e2b9c41a06
Revises: c4d1a7e5f203
Create Date: 2026-12-02 13:10:00

"""
from alembic import op
import sqlalchemy as sa
import partnernet.models.base


# revision identifiers, used by Alembic.
revision = 'd7e2b9c41a06'
down_revision = 'c4d1a7e5f203'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('click_producers',
    sa.Column('producer', sa.String(length=80), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.Column('records', sa.BigInteger(), nullable=False),
    sa.Column('first_seen', partnernet.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen', partnernet.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('producer', name=op.f('pk_click_producers'))
    )
    with op.batch_alter_table('click_producers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_click_producers_last_seen'), ['last_seen'], unique=False)

    op.create_table('click_stream_epochs',
    sa.Column('token', sa.String(length=40), nullable=False),
    sa.Column('created_at', partnernet.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('token', name=op.f('pk_click_stream_epochs'))
    )
    op.create_table('click_losses',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('found_at', partnernet.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('producer', sa.String(length=80), nullable=True),
    sa.Column('batches', sa.BigInteger(), nullable=False),
    sa.Column('records', sa.BigInteger(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('reported_at', partnernet.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_click_losses'))
    )
    with op.batch_alter_table('click_losses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_click_losses_found_at'), ['found_at'], unique=False)


def downgrade():
    with op.batch_alter_table('click_losses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_click_losses_found_at'))
    op.drop_table('click_losses')
    op.drop_table('click_stream_epochs')
    with op.batch_alter_table('click_producers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_click_producers_last_seen'))
    op.drop_table('click_producers')
