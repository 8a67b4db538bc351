/**
 * kafkajs 2.2.4 (unmaintained) passes a negative delay to setTimeout when no
 * request is throttled (RequestQueue.scheduleCheckPendingRequests); Node 24
 * then emits a TimeoutNegativeWarning and uses 1 ms, which is what kafkajs
 * meant. The warning would be a non-JSON line in the router's JSON logs, so
 * exactly that one is dropped; every other warning reaches Node's own printer.
 */
const printers = process.listeners('warning');
process.removeAllListeners('warning');
process.on('warning', (warning) => {
  if (warning.name === 'TimeoutNegativeWarning') return;
  for (const print of printers) print(warning);
});
