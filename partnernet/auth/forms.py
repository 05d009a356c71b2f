"""Login form (shape checks only)."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Email, Length, Optional


class LoginForm(FlaskForm):
    """Email + password, remember-me, and the ``next`` path to return to."""

    email = EmailField("Email", validators=[DataRequired(), Email(check_deliverability=False), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])
    remember = BooleanField("Keep me signed in")
    next = HiddenField()


class KeyForm(FlaskForm):
    """Create an API key, with an optional label to tell keys apart."""

    label = StringField("Label (optional)", validators=[Optional(), Length(max=100)],
                        description="e.g. reporting script")


class AccountPasswordForm(FlaskForm):
    """Change one's own password."""

    current_password = PasswordField("Current password", validators=[DataRequired(), Length(max=200)])
    new_password = PasswordField("New password", validators=[DataRequired(), Length(max=200)])


class ButtonForm(FlaskForm):
    """A button with a CSRF token (revoke, deactivate, activate)."""
