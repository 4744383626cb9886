DROP TABLE audit_checkpoints;
DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
