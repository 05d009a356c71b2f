"""Partner portal forms (shape checks only; the rules live in the services)."""

from __future__ import annotations

from zoneinfo import available_timezones

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    EmailField,
    HiddenField,
    IntegerField,
    PasswordField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    URLField,
)
from wtforms.validators import DataRequired, Email, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from ..models import CHANNELS

_ZONES: list[str] | None = None


def zone_choices() -> list[tuple[str, str]]:
    """IANA zone names, UTC first then sorted."""
    global _ZONES
    if _ZONES is None:
        _ZONES = ["UTC"] + sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV")))
    return [(z, z) for z in _ZONES]


class MultiCheckboxField(SelectMultipleField):
    """A list of checkboxes."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class PayoutMixin:
    payout_method = RadioField("Payout method", choices=[("paypal", "PayPal"), ("bank", "Bank transfer (IBAN)")],
                               default="paypal", validators=[DataRequired()])
    paypal_email = EmailField("PayPal email", validators=[Optional(), Length(max=254)])
    # Bank details: checked by partnernet.payouts.details (schwifty) in the service; errors land here.
    payout_iban = StringField("IBAN", validators=[Optional(), Length(max=64)])
    payout_bic = StringField("BIC (optional)", validators=[Optional(), Length(max=32)])
    account_holder = StringField("Account holder (optional, if not your name)", validators=[Optional(), Length(max=70)])
    timezone = SelectField("Time zone", default="UTC", validators=[DataRequired()])


class SignupForm(PayoutMixin, FlaskForm):
    """The partner sign-up form."""

    email = EmailField("Email", validators=[DataRequired(), Email(check_deliverability=False), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)],
                             description="10+ characters mixing letters, digits or symbols, or a 16+ character passphrase")
    name = StringField("Name or brand", validators=[DataRequired(), Length(max=200)])
    kind = RadioField("I am", choices=[("affiliate", "an affiliate (site, newsletter, ads)"),
                                       ("influencer", "an influencer (social audience)")],
                      default="affiliate", validators=[DataRequired()])
    website = URLField("Website", validators=[Optional(), Length(max=500)])
    social_handles = StringField("Social handles", validators=[Optional(), Length(max=500)],
                                 description="e.g. @you on Instagram, youtube.com/@you")
    audience_size = IntegerField("Audience size", validators=[Optional(), NumberRange(min=0, max=2_000_000_000)])
    channels = MultiCheckboxField("Main channels", choices=[(c, c.capitalize()) for c in CHANNELS],
                                  validators=[DataRequired(message="choose at least one channel")])
    accept_terms = BooleanField("I accept the partner terms", validators=[DataRequired(message="you need to accept the terms")])
    recruiter = HiddenField()

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.timezone.choices = zone_choices()


class ResetRequestForm(FlaskForm):
    """Ask for a password-reset email."""

    email = EmailField("Email", validators=[DataRequired(), Email(check_deliverability=False), Length(max=254)])


class ResetForm(FlaskForm):
    """Set a new password from a reset link."""

    password = PasswordField("New password", validators=[DataRequired(), Length(max=200)])


class ApplyForm(FlaskForm):
    """Apply to a campaign."""

    message = TextAreaField("How will you promote it? (optional)", validators=[Optional(), Length(max=2000)])


class LinkForm(FlaskForm):
    """The link builder."""

    campaign_id = SelectField("Campaign", coerce=int, validators=[DataRequired()])
    channel = SelectField("Channel", choices=[(c, c.capitalize()) for c in CHANNELS], validators=[DataRequired()])
    sub1 = StringField("Sub ID 1", validators=[Optional(), Length(max=255)])
    sub2 = StringField("Sub ID 2", validators=[Optional(), Length(max=255)])
    sub3 = StringField("Sub ID 3", validators=[Optional(), Length(max=255)])
    deep_link = URLField("Deep link (optional)", validators=[Optional(), Length(max=2000)],
                         description="a page on one of the campaign's allowed hosts")
    coupon_code = StringField("Vanity coupon code (optional, our team reviews it)",
                              validators=[Optional(), Length(max=64)],
                              description="1-64 letters, digits, _ or -; the link works at once, the code once approved")


class ProfileForm(PayoutMixin, FlaskForm):
    """Payout method and time zone; the current password confirms a change of payout details."""

    current_password = PasswordField("Current password (to change payout details)",
                                     validators=[Optional(), Length(max=200)])

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.timezone.choices = zone_choices()


class PasswordForm(FlaskForm):
    """Change the password."""

    current_password = PasswordField("Current password", validators=[DataRequired(), Length(max=200)])
    new_password = PasswordField("New password", validators=[DataRequired(), Length(max=200)])


class EmptyForm(FlaskForm):
    """A button with a CSRF token."""


class PostbackForm(FlaskForm):
    """A partner postback URL, global or for one campaign."""

    campaign_id = SelectField("For", coerce=int, default=0)
    url = StringField("Postback URL", validators=[DataRequired(), Length(max=2000)],
                      description="macros: {click_id} {sub1}..{sub5} {event} {txn_id} {status} {payout} {currency}")


class VanityCodeForm(FlaskForm):
    """Ask for a vanity coupon code on a link (influencers; the rules are in the service)."""

    code = StringField("Vanity code", validators=[DataRequired(), Length(max=64)],
                       description="1-64 letters, digits, _ or -; unique across the network (case-insensitive)")
