"""All models, re-exported so Alembic and the services see one metadata."""

from .audit import AuditLog
from .commission import (
    COUPON_REQUEST_STATUSES,
    CouponRequest,
    PartnerPayoutOverride,
    PartnerTier,
    PerformanceBonus,
    TrackingNumber,
)
from .clients import ATTRIBUTION_MODELS, CAMPAIGN_STATUSES, Campaign, CampaignEvent, Client
from .conversions import CONVERSION_STATUSES, REJECTION_REASONS, Conversion, ConversionSplit, PostbackLog
from .customers import CustomerBinding
from .invoices import INVOICE_LINE_KINDS, INVOICE_STATUSES, Invoice, InvoiceCharge, InvoiceLine
from .ledger import LedgerAccount, LedgerPosting, LedgerTransaction
from .partners import CHANNELS, PARTNER_KINDS, PARTNER_STATUSES, PAYOUT_METHODS, Link, Partner
from .portal import (
    APPLICATION_STATUSES,
    CampaignApplication,
    OutboxEmail,
    PartnerPostback,
    PartnerPostbackDelivery,
    PartnerProfile,
)
from .payouts import BATCH_STATUSES, PayoutBatch, PayoutItem
from .schedule import RUN_STATUSES, PayoutSchedule, ScheduleRun
from .rollups import (
    MONEY_COLUMNS,
    TRAFFIC_COLUMNS,
    CampaignMoneyRollup,
    CampaignTrafficRollup,
    DailyMoneyRollup,
    DailyTrafficRollup,
    MoneyRollup,
)
from .click_stream import ClickLoss, ClickProducer, ClickStreamEpoch  # noqa: F401
from .tracking import FALLBACK_REASONS, BufferBatch, Click, LinkCounter, TrafficRollup
from .users import ROLES, ApiKey, LoginThrottle, User

__all__ = [
    "ATTRIBUTION_MODELS", "BATCH_STATUSES", "CAMPAIGN_STATUSES", "CHANNELS", "CONVERSION_STATUSES",
    "FALLBACK_REASONS", "PARTNER_KINDS", "PARTNER_STATUSES", "REJECTION_REASONS", "ROLES",
    "ApiKey", "AuditLog", "BufferBatch", "Campaign", "CampaignEvent", "Click", "ClickLoss", "ClickProducer",
    "ClickStreamEpoch", "Client", "Conversion", "ConversionSplit",
    "LedgerAccount", "LoginThrottle", "LedgerPosting", "LedgerTransaction", "Link", "LinkCounter", "Partner",
    "PayoutBatch", "PayoutItem", "PostbackLog", "TrafficRollup", "User",
    "APPLICATION_STATUSES", "PAYOUT_METHODS", "CampaignApplication", "OutboxEmail", "PartnerPostback",
    "PartnerPostbackDelivery", "PartnerProfile",
    "COUPON_REQUEST_STATUSES", "CouponRequest", "PartnerPayoutOverride", "PartnerTier", "PerformanceBonus",
    "TrackingNumber",
    "INVOICE_LINE_KINDS", "INVOICE_STATUSES", "Invoice", "InvoiceCharge", "InvoiceLine",
    "MONEY_COLUMNS", "TRAFFIC_COLUMNS", "CampaignMoneyRollup", "CampaignTrafficRollup", "DailyMoneyRollup",
    "DailyTrafficRollup", "MoneyRollup",
    "RUN_STATUSES", "PayoutSchedule", "ScheduleRun",
    "CustomerBinding",
]
