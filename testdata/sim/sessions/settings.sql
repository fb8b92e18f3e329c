-- Session settings through a transaction-pooling proxy: SET and SHOW, unknown parameters,
-- SET LOCAL ending with its transaction, RESET, and a fresh connection's defaults.
-- (2s is the statement timeout the proxy gives every session in the simulator's scenarios:
-- `--statement-timeout 2`.)
-- value: script-settings
SHOW application_name
SET application_name = 'scripted-settings'
-- value: scripted-settings
SHOW application_name
SET statement_timeout = '1500ms'
-- value: 1500ms
SHOW statement_timeout
-- expect: 42704
SET nonsense = 1
-- expect: 42704
SHOW no_such_setting
BEGIN
SET LOCAL statement_timeout = '100ms'
-- value: 100ms
SHOW statement_timeout
-- expect: 57014
SELECT pg_sleep(0.3)
ROLLBACK
-- value: 1500ms
SHOW statement_timeout
RESET statement_timeout
-- value: 2s
SHOW statement_timeout
-- value: scripted-settings
SHOW application_name
-- reconnect
-- value: script-settings
SHOW application_name
-- value: 2s
SHOW statement_timeout
