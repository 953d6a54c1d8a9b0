"""
The cleanup stage (Postfix's cleanup(8)): every message enters the queue
through it, whether it came by SMTP, from the pickup folder or is a report we
made. It checks the data while it streams in, adds the trace header, runs the
filters, and hands the finished spool to the queue intake.
"""
