"""What people read: result files, JUnit, GitHub output, the console summary and the HTML report."""
