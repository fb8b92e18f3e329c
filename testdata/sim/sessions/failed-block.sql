-- An error aborts the transaction: every later statement fails with 25P02 until the block
-- ends, and COMMIT of a failed block rolls back (answering ROLLBACK, not an error).
BEGIN
UPDATE accounts SET balance = balance + 5 WHERE id = 3
-- expect: 42703
SELECT nonsense
-- expect: 25P02
SELECT 1
-- expect: 25P02
UPDATE accounts SET balance = balance - 5 WHERE id = 3
COMMIT
SELECT balance FROM accounts WHERE id = 3
BEGIN
-- expect: 42601
SELEC 1
-- expect: 25P02
SELECT 1
ROLLBACK
BEGIN
-- expect: 42704
SELECT current_setting('no.such_setting')
-- expect: 25P02
SELECT balance FROM accounts WHERE id = 3
ROLLBACK
-- value: 1
SELECT 1
