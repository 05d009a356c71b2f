"""Client page forms: shape checks only; the rules live in :mod:`partnernet.clients.services`."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField
from wtforms.validators import Length, Optional, Regexp

_AMOUNT = Regexp(r"^\s*[0-9]+(\.[0-9]+)?\s*$", message='Give an amount such as "500.00", or leave it empty.')


class LimitsForm(FlaskForm):
    """Budget and caps of one campaign, as decimal strings in its currency; empty = no limit."""

    budget = StringField("Total budget", validators=[Optional(), Length(max=20), _AMOUNT])
    daily_cap = StringField("Daily cap", validators=[Optional(), Length(max=20), _AMOUNT])
    monthly_cap = StringField("Monthly cap", validators=[Optional(), Length(max=20), _AMOUNT])


class StatusForm(FlaskForm):
    """Pause or resume a campaign: ``status`` is "paused" or "active"."""

    status = HiddenField(validators=[Regexp(r"^(active|paused)$")])


class EmptyForm(FlaskForm):
    """A POST button with nothing but its CSRF token."""
