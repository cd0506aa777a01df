// @peculiar/x509 throws at import unless the Reflect metadata API exists; import it only via here.
import 'reflect-metadata';
export * as x509 from '@peculiar/x509';
