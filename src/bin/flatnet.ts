process.stderr.write('not yet\n'); process.exitCode = 1;
